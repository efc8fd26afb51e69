"""Embedded Postgres: data survives a restart; migrations are idempotent; pgvector present."""

from sqlalchemy import text

from orchestrator.db.engine import EmbeddedPostgres, make_sync_engine, sqlalchemy_url
from orchestrator.db.migrate import upgrade


def test_data_persists_across_restarts(tmp_path):
    pgdata = tmp_path / "pgdata"
    with EmbeddedPostgres(pgdata) as pg:
        upgrade(pg.url)
        upgrade(pg.url)  # idempotent
        engine = make_sync_engine(pg.url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO documents (id, title, n_chars, content_sha256) "
                    "VALUES (gen_random_uuid(), 'kept', 4, 'x')"
                )
            )
        engine.dispose()
    with EmbeddedPostgres(pgdata) as pg:
        engine = make_sync_engine(pg.url)
        with engine.connect() as conn:
            titles = conn.execute(text("SELECT title FROM documents")).scalars().all()
            version = conn.execute(
                text("SELECT extversion FROM pg_extension WHERE extname='vector'")
            ).scalar()
            index = conn.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_chunks_embedding_hnsw'")
            ).scalar()
        engine.dispose()
    assert titles == ["kept"]
    assert version
    assert "hnsw" in index and "vector_cosine_ops" in index


def test_url_schemes():
    assert sqlalchemy_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert sqlalchemy_url("postgresql://u@/d?host=/tmp") == "postgresql+psycopg://u@/d?host=/tmp"
