"""Backups that restore: ``pg_dump`` / ``pg_restore`` of June's whole database.

One archive (PostgreSQL's custom format, compressed) holds everything a user has: API keys,
documents, chunks with their pgvector embeddings, conversations and turns, and the schema's
Alembic version. Restoring it into an empty embedded data directory, or an empty external
database, gives back the same search results and conversations
(``tests/integration/test_backup.py`` checks it).

The client tools come from the embedded PostgreSQL 16 (the ``pgserver`` wheel), so they work
on any host; an external server newer than 16 needs its own ``pg_dump`` on ``PATH`` and
``JUNE_PG_BIN`` pointing at its folder.

A restore never overwrites a database that already holds June's data unless told to
(``--force``): a backup restored over the wrong database would lose what is there.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator.db.engine import DatabaseError, import_pgserver

log = logging.getLogger(__name__)

# June's tables (the Alembic version table comes along with them).
TABLES = ("api_keys", "documents", "chunks", "conversations", "turns")


@dataclass(frozen=True)
class Archive:
    path: Path
    size_bytes: int
    tables: tuple[str, ...]  # the tables whose rows it holds


def client_tool(name: str) -> Path:
    """``pg_dump`` or ``pg_restore``: from ``JUNE_PG_BIN``, else the embedded PostgreSQL's."""
    folder = os.environ.get("JUNE_PG_BIN")
    if folder:
        tool = Path(folder) / name
    else:
        tool = Path(import_pgserver().__file__).parent / "pginstall" / "bin" / name
    if not tool.is_file():
        raise DatabaseError(f"{name} not found at {tool} (set JUNE_PG_BIN to its folder)")
    return tool


def libpq_url(url: str) -> str:
    """A URL libpq takes: SQLAlchemy's driver suffix (``postgresql+psycopg``) removed."""
    return re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "")
        reason = re.sub(r"^\S*(pg_dump|pg_restore): (error: )?", "", reason)
        raise DatabaseError(f"{what} failed: {reason or f'exit code {proc.returncode}'}")
    return proc


def read_archive(path: Path) -> Archive:
    """What an archive holds; a file that is not one is refused in one line."""
    if not path.is_file():
        raise DatabaseError(f"no backup at {path}")
    listing = _run(
        [str(client_tool("pg_restore")), "--list", str(path)], f"reading {path.name}"
    ).stdout
    tables = tuple(t for t in TABLES if re.search(rf"TABLE DATA \S+ {t} ", listing))
    if "alembic_version" not in listing or not tables:
        raise DatabaseError(f"{path} is a PostgreSQL archive but not a June backup")
    return Archive(path, path.stat().st_size, tables)


def backup(url: str, out: Path) -> Archive:
    """Dump the database at ``url`` into ``out`` (written whole or not at all)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        _run(
            [
                str(client_tool("pg_dump")),
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--file={partial}",
                f"--dbname={libpq_url(url)}",
            ],
            "pg_dump",
        )
        archive = read_archive(partial)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    log.info("backup written: %s (%d bytes)", out, archive.size_bytes)
    return Archive(out, archive.size_bytes, archive.tables)


def rows_held(url: str) -> int:
    """How many rows of June's data the database holds (0 for an empty or new one)."""
    from sqlalchemy import inspect, text

    from orchestrator.db.engine import make_sync_engine

    engine = make_sync_engine(url)
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            return sum(
                int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in TABLES
                if t in present
            )
    finally:
        engine.dispose()


def restore(url: str, archive: Archive, *, force: bool = False) -> None:
    """Restore ``archive`` (from :func:`read_archive`, so it is a June backup) into the
    database at ``url``, in one transaction.

    Refused (nothing changed) when the database already holds June's data and ``force``
    is not given.
    """
    held = rows_held(url)
    if held and not force:
        raise DatabaseError(
            f"the database already holds {held} rows of June's data; restoring would replace "
            "them (use --force to replace them)"
        )
    _run(
        [
            str(client_tool("pg_restore")),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={libpq_url(url)}",
            str(archive.path),
        ],
        "pg_restore",
    )
    log.info("restored %s into the database", archive.path)
