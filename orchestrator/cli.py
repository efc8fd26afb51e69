"""``june``: the one command-line interface (serve, triton, db, repo, export, bench)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from benchmarks.perf import perf_app
from exporters.cli import build_from_settings, export_app, repo_app
from orchestrator.cli_errors import one_line_errors
from orchestrator.config import get_settings
from orchestrator.log import setup_logging

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("june")

app = typer.Typer(
    name="june",
    help="June: a voice assistant served by NVIDIA Triton, with RAG over PostgreSQL + pgvector.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(repo_app, name="repo")
app.add_typer(export_app, name="export")
app.add_typer(perf_app, name="bench")


@app.callback()
def main(
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR (default: JUNE_LOG_LEVEL).")
    ] = None,
) -> None:
    settings = get_settings()
    setup_logging(log_level or settings.log_level)


@app.command()
@one_line_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Orchestrator port (default 8080).")] = None,
    build: Annotated[
        bool, typer.Option(help="Build the model repository first (cached exports: seconds).")
    ] = True,
) -> None:
    """Start the whole stack in the foreground: Postgres, Triton, the orchestrator (and bot)."""
    from orchestrator.stack import serve as serve_stack

    settings = get_settings()
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=updates)
    if build:
        build_from_settings(settings)
    serve_stack(settings)


@app.command()
@one_line_errors
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Orchestrator port (default 8080).")] = None,
) -> None:
    """Only the orchestrator, against an external Triton and DATABASE_URL (docker compose)."""
    from orchestrator.stack import serve_api

    settings = get_settings()
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    serve_api(settings.model_copy(update=updates))


@app.command()
@one_line_errors
def triton(
    build: Annotated[bool, typer.Option(help="Build the model repository first.")] = False,
) -> None:
    """Run only Triton on the built model repository, until Ctrl-C."""
    from orchestrator.stack import triton_for

    settings = get_settings()
    if build:
        build_from_settings(settings)
    server = triton_for(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start(timeout_s=settings.triton_start_timeout_s)
    try:
        while not stop.wait(1.0):
            if server.pid is None or not server.is_ready():
                log.error("tritonserver stopped unexpectedly")
                raise typer.Exit(1)
    finally:
        server.stop()


@db_app.command("upgrade")
@one_line_errors
def db_upgrade() -> None:
    """Apply migrations to DATABASE_URL, or to the embedded Postgres in the data dir."""
    from contextlib import ExitStack

    from orchestrator.db.migrate import upgrade
    from orchestrator.stack import start_database

    with ExitStack() as stack:
        upgrade(start_database(get_settings(), stack))


@db_app.command("url")
@one_line_errors
def db_url() -> None:
    """Print the URL of the database June uses (starting the embedded one if needed)."""
    settings = get_settings()
    if settings.database_url:
        typer.echo(settings.database_url)
        return
    from orchestrator.db.engine import EmbeddedPostgres

    typer.echo(EmbeddedPostgres(Path(settings.pgdata)).start())


if __name__ == "__main__":
    app()
