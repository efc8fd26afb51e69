"""Database connections: the embedded Postgres (pgserver) or an external ``DATABASE_URL``."""

from __future__ import annotations

import logging
import shutil
import subprocess
import warnings
from pathlib import Path
from types import ModuleType, TracebackType

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from orchestrator.cli_errors import CommandError

log = logging.getLogger(__name__)


class DatabaseError(CommandError):
    """The database could not be reached or prepared; the message says why."""


def first_line(exc: BaseException) -> str:
    """The driver's own first line of an error (SQLAlchemy adds lines of boilerplate)."""
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


def sqlalchemy_url(url: str) -> str:
    """Any ``postgres://`` / ``postgresql://`` URL -> the psycopg 3 driver SQLAlchemy uses."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise DatabaseError(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")


def import_pgserver() -> ModuleType:
    """``pgserver``, without platformdirs' warning when ``XDG_RUNTIME_DIR`` is unset (as on
    most servers and containers): it falls back to ``/tmp/runtime-<uid>``, which is fine,
    but the warning printed two lines into every ``june`` command's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import pgserver
    return pgserver


class EmbeddedPostgres:
    """PostgreSQL 16 + pgvector from the ``pgserver`` wheel, data kept in ``pgdata``.

    It listens on a Unix socket only (no TCP port at all). The server keeps its data across
    restarts and is stopped when the last handle in this process is closed.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = Path(pgdata)
        self._server: object | None = None

    def start(self) -> str:
        pgserver = import_pgserver()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", self.pgdata)
        empty = not any(self.pgdata.iterdir())
        try:
            try:
                self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
            except subprocess.CalledProcessError as exc:
                # initdb of a new cluster has died of a signal (SIGSEGV, seen once in
                # many runs here): what it left is half a cluster, never anyone's data.
                # A folder that held anything before is never touched.
                if not (empty and exc.returncode < 0):
                    raise
                log.warning("initdb died (%s); creating the cluster again", first_line(exc))
                shutil.rmtree(self.pgdata)
                self.pgdata.mkdir(parents=True)
                self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        except Exception as exc:
            raise DatabaseError(
                f"embedded PostgreSQL failed to start in {self.pgdata}: {first_line(exc)}"
            ) from exc
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise DatabaseError("embedded PostgreSQL is not started")
        return self._server.get_uri()  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Let go of the server; the last process using it stops it."""
        if self._server is not None:
            from orchestrator.reaper import pg_users, stop_postgres

            log.info("stopping embedded PostgreSQL")
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None
            # pgserver stops only the postmaster it saw start: one restarted in place
            # (pg_ctl restart, a crash recovery) would be left running.
            if not pg_users(self.pgdata):
                stop_postgres(self.pgdata)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def make_sync_engine(url: str) -> Engine:
    return create_engine(sqlalchemy_url(url), pool_pre_ping=True)


def make_async_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 10, pool_timeout: float = 5.0
) -> AsyncEngine:
    """The orchestrator's pool; a request that cannot get a connection in ``pool_timeout``
    seconds fails with SQLAlchemy's TimeoutError, which the API answers with 503."""
    return create_async_engine(
        sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def check_pgvector(url: str) -> None:
    """Fail with one line if the server lacks the ``vector`` extension."""
    engine = make_sync_engine(url)
    try:
        with engine.connect() as conn:
            available = conn.execute(
                text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
            ).first()
    except Exception as exc:
        raise DatabaseError(f"cannot connect to the database: {first_line(exc)}") from exc
    finally:
        engine.dispose()
    if available is None:
        raise DatabaseError("the database has no pgvector extension (CREATE EXTENSION vector)")
