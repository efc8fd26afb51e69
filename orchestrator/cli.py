"""``june``: the one command-line interface (serve, triton, db, repo, export, bench)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from benchmarks.perf import perf_app
from exporters.cli import build_from_settings, export_app, models_app, repo_app
from orchestrator.cli_errors import one_line_errors
from orchestrator.config import get_settings
from orchestrator.db.session import database_session
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
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(repo_app, name="repo")
app.add_typer(export_app, name="export")
app.add_typer(models_app, name="models")
app.add_typer(perf_app, name="bench")


@app.callback()
def main(
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR (default: JUNE_LOG_LEVEL).")
    ] = None,
) -> None:
    settings = get_settings()
    setup_logging(log_level or settings.log_level, settings.log_format)
    # Models load from local files only: no library may reach a hub behind June's back
    # (`june models fetch --online` is the one way to download).
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(variable, "1")


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


def _serve_bot(token: object, missing: str) -> None:
    """The orchestrator a bot runs in, against an external Triton and DATABASE_URL; one
    line and exit 1 without the bot's token."""
    from orchestrator.stack import serve_api

    if token is None:
        log.error(missing)
        raise typer.Exit(1)
    serve_api(get_settings())


@app.command()
@one_line_errors
def bot() -> None:
    """The Telegram bot with the orchestrator it runs in, against an external Triton and
    DATABASE_URL (`june serve` starts it too when TELEGRAM_BOT_TOKEN is set)."""
    token = get_settings().telegram_bot_token
    _serve_bot(token, "set TELEGRAM_BOT_TOKEN (from @BotFather) to run the bot")


@app.command()
@one_line_errors
def discord() -> None:
    """The Discord bot with the orchestrator it runs in, against an external Triton and
    DATABASE_URL (`june serve` starts it too when DISCORD_BOT_TOKEN is set)."""
    token = get_settings().discord_bot_token
    _serve_bot(token, "set DISCORD_BOT_TOKEN (from the Discord developer portal) to run the bot")


@app.command()
@one_line_errors
def wyoming(
    port: Annotated[
        int, typer.Option(help="Wyoming TCP port (Home Assistant's default: 10300).")
    ] = 10300,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
) -> None:
    """The Wyoming server (Home Assistant) with the orchestrator it runs in, against an
    external Triton and DATABASE_URL (`june serve` starts it too when JUNE_WYOMING_PORT is set)."""
    from orchestrator.stack import serve_api

    settings = get_settings()
    updates = {"wyoming_port": port, **({"wyoming_host": host} if host else {})}
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


@app.command()
@one_line_errors
def dashboard(
    out: Annotated[Path, typer.Option(help="The PNG to write.")] = Path("dashboard.png"),
    prometheus: Annotated[str, typer.Option(help="Prometheus URL.")] = "http://127.0.0.1:9090",
    minutes: Annotated[float, typer.Option(help="How far back to draw.")] = 15.0,
    title: Annotated[str, typer.Option(help="A title above the panels.")] = "",
    window: Annotated[str, typer.Option(help="Rate window instead of the panels' 5m.")] = "5m",
) -> None:
    """Draw the Grafana dashboard's panels from a running Prometheus (matplotlib)."""
    from orchestrator.monitoring.render import render

    drawn = render(prometheus, out, minutes=minutes, title=title, window=window)
    typer.echo(f"{out}: {drawn} series")


@db_app.command("backup")
@one_line_errors
def db_backup(
    out: Annotated[Path, typer.Argument(help="The archive to write (pg_dump custom format).")],
) -> None:
    """Dump the whole database (keys, documents, vectors, conversations) to one file."""
    from contextlib import ExitStack

    from exporters.common import progress
    from orchestrator.db.backup import backup
    from orchestrator.stack import start_database

    with ExitStack() as stack:
        url = start_database(get_settings(), stack)
        with progress() as bar:
            bar.add_task(f"backup to {out.name}", total=None)
            archive = backup(url, out)
    typer.echo(f"{archive.path}: {archive.size_bytes} bytes ({', '.join(archive.tables)})")


@db_app.command("restore")
@one_line_errors
def db_restore(
    archive: Annotated[Path, typer.Argument(help="A file written by `june db backup`.")],
    force: Annotated[
        bool, typer.Option(help="Replace the data the database already holds.")
    ] = False,
) -> None:
    """Restore a backup into DATABASE_URL or the embedded database (empty unless --force)."""
    from contextlib import ExitStack

    from exporters.common import progress
    from orchestrator.db.backup import read_archive, restore
    from orchestrator.stack import start_database

    backup = read_archive(archive)  # not a June backup: refused before any database starts
    with ExitStack() as stack:
        url = start_database(get_settings(), stack)
        with progress() as bar:
            bar.add_task(f"restore {archive.name}", total=None)
            restore(url, backup, force=force)
    typer.echo(f"restored {backup.path} ({', '.join(backup.tables)})")


@keys_app.command("create")
@one_line_errors
def keys_create(
    user: Annotated[str, typer.Option(help="The user the key acts for.")],
    name: Annotated[str, typer.Option(help="A label, e.g. the client's name.")] = "default",
    admin: Annotated[
        bool, typer.Option(help="May store shared documents (visible to every user).")
    ] = False,
) -> None:
    """Make a key and print it. It is shown only now; June keeps only its hash."""
    from orchestrator.auth import create_key

    with database_session() as session:
        new = create_key(session, user_id=user, name=name, is_admin=admin)
    log.info("created key %s for user %r (%s)", new.id, new.user_id, new.name)
    typer.echo(new.key)


@keys_app.command("list")
@one_line_errors
def keys_list() -> None:
    """Every key: id, prefix, user, name, admin, created, revoked."""
    from rich.console import Console
    from rich.table import Table

    from orchestrator.auth import list_keys

    table = Table("id", "prefix", "user", "name", "admin", "created", "revoked")
    with database_session() as session:
        for key in list_keys(session):
            table.add_row(
                str(key.id),
                key.prefix + "...",
                key.user_id,
                key.name,
                "yes" if key.is_admin else "",
                f"{key.created_at:%Y-%m-%d %H:%M}",
                f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
            )
    # Piped (scripts, tests): wide enough that no column is cut.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@keys_app.command("revoke")
@one_line_errors
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id, or the prefix `june keys list` shows.")],
) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    from orchestrator.auth import revoke_key

    with database_session() as session:
        row = revoke_key(session, key.removesuffix("..."))
        log.info("revoked key %s of user %r", row.id, row.user_id)


if __name__ == "__main__":
    app()
