"""A synchronous session on June's migrated database, for commands (keys, load runs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from sqlalchemy.orm import Session

from orchestrator.config import Settings, get_settings
from orchestrator.db.engine import EmbeddedPostgres, make_sync_engine
from orchestrator.db.migrate import upgrade


@contextmanager
def database_session(settings: Settings | None = None) -> Iterator[Session]:
    """A session on ``DATABASE_URL``, or on the embedded Postgres (started if needed)."""
    settings = settings or get_settings()
    with ExitStack() as stack:
        url = settings.database_url or stack.enter_context(EmbeddedPostgres(settings.pgdata)).url
        upgrade(url)
        engine = make_sync_engine(url)
        try:
            with Session(engine) as session:
                yield session
        finally:
            engine.dispose()
