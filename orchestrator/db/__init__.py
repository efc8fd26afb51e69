"""Persistence: PostgreSQL + pgvector (embedded by default), SQLAlchemy 2.0, Alembic."""
