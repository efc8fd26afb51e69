"""Documents in PostgreSQL + pgvector: ingest, list, delete, search.

Service functions are keyword-only and take an ``AsyncSession`` and, where embeddings are
needed, the Triton gateway; the API routes stay thin.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator import metrics
from orchestrator.db.models import Chunk, Document
from orchestrator.rag.chunking import chunk_text
from orchestrator.triton.client import TritonGateway


def visible_to(user_id: str) -> ColumnElement[bool]:
    """The documents a user may read: their own, and the shared ones (no owner)."""
    return or_(Document.owner_id == user_id, Document.owner_id.is_(None))


@dataclass(frozen=True)
class SearchHit:
    document_id: uuid.UUID
    title: str
    chunk_id: int
    ordinal: int
    text: str
    score: float  # cosine similarity, 1 is identical


@dataclass(frozen=True)
class DocumentSummary:
    id: uuid.UUID
    title: str
    source: str | None
    n_chars: int
    n_chunks: int
    created_at: datetime
    shared: bool


async def ingest_document(
    session: AsyncSession,
    triton: TritonGateway,
    *,
    title: str,
    text_: str,
    source: str | None = None,
    owner_id: str | None,
    max_words: int = 120,
    overlap_words: int = 20,
    batch_size: int = 32,
) -> DocumentSummary:
    """Chunk, embed through Triton and store a document, all or nothing.

    Embedding happens before anything is written, so a Triton failure stores nothing.
    ``owner_id`` None stores a shared document, which every user's search reads.
    """
    # Off the event loop: a large document must not stall every other request.
    chunks = await asyncio.to_thread(
        chunk_text, text_, max_words=max_words, overlap_words=overlap_words
    )
    if not chunks:
        raise ValueError("the document has no text to index")
    vectors = await triton.embed(chunks, batch_size=batch_size)
    doc = Document(
        title=title,
        source=source,
        n_chars=len(text_),
        content_sha256=hashlib.sha256(text_.encode("utf-8")).hexdigest(),
        owner_id=owner_id,
    )
    doc.chunks = [
        Chunk(ordinal=i, text=chunk, embedding=vec.tolist())
        for i, (chunk, vec) in enumerate(zip(chunks, vectors, strict=True))
    ]
    session.add(doc)
    await session.commit()
    metrics.DOCUMENTS_INGESTED.inc()
    metrics.CHUNKS_INGESTED.inc(len(chunks))
    return _summary(doc, len(chunks))


def _summary(doc: Document, n_chunks: int) -> DocumentSummary:
    return DocumentSummary(
        id=doc.id,
        title=doc.title,
        source=doc.source,
        n_chars=doc.n_chars,
        n_chunks=n_chunks,
        created_at=doc.created_at,
        shared=doc.owner_id is None,
    )


async def list_documents(
    session: AsyncSession, *, user_id: str, limit: int = 50, offset: int = 0
) -> list[DocumentSummary]:
    n_chunks = (
        select(func.count(Chunk.id)).where(Chunk.document_id == Document.id).scalar_subquery()
    )
    rows = await session.execute(
        select(Document, n_chunks)
        .where(visible_to(user_id))
        .order_by(Document.created_at.desc(), Document.id)
        .limit(limit)
        .offset(offset)
    )
    return [_summary(doc, int(n)) for doc, n in rows.all()]


async def delete_document(
    session: AsyncSession, *, document_id: uuid.UUID, user_id: str, is_admin: bool = False
) -> bool:
    """Delete one of the user's documents (an admin: also a shared one) and its chunks.

    False when there is no such document the user may delete.
    """
    allowed = Document.owner_id == user_id
    if is_admin:
        allowed = or_(allowed, Document.owner_id.is_(None))
    result = await session.execute(delete(Document).where(Document.id == document_id, allowed))
    await session.commit()
    return bool(result.rowcount)


async def pgvector_version(session: AsyncSession) -> tuple[int, ...]:
    """The installed pgvector's version, e.g. (0, 6, 2); read once per process."""
    global _pgvector_version
    if _pgvector_version is None:
        raw = await session.scalar(
            text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        )
        _pgvector_version = tuple(int(p) for p in str(raw or "0").split(".") if p.isdigit())
    return _pgvector_version


_pgvector_version: tuple[int, ...] | None = None
ITERATIVE_SCAN = (0, 8)  # pgvector added hnsw.iterative_scan in 0.8.0


async def search(
    session: AsyncSession,
    triton: TritonGateway,
    *,
    query: str,
    user_id: str,
    top_k: int = 5,
    min_score: float | None = None,
    deadline: float | None = None,
) -> list[SearchHit]:
    """The ``top_k`` chunks closest to ``query`` among the documents ``user_id`` may read.

    The caller always gets their own top-k, whatever other users store. An HNSW scan
    filtered afterwards would not promise that: it returns ``ef_search`` candidates from
    all users, and another user's many similar chunks can push every one of the caller's
    out. So on pgvector 0.8+ the scan is iterative (it goes on until ``top_k`` visible
    rows are found, in exact distance order); on older servers (the embedded 0.6.2) the
    visible chunks are ranked exactly, without the index.
    """
    vector = (await triton.embed([query], deadline=deadline))[0].tolist()
    distance = Chunk.embedding.cosine_distance(vector)
    if await pgvector_version(session) >= ITERATIVE_SCAN:
        await session.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
        await session.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, int(top_k) * 2)}"))
        stmt = (
            select(Chunk, Document.title, distance.label("distance"))
            .join(Document, Document.id == Chunk.document_id)
            .where(visible_to(user_id))
            .order_by(distance)
            .limit(top_k)
        )
    else:
        visible = (
            select(Chunk.id, Chunk.embedding)
            .join(Document, Document.id == Chunk.document_id)
            .where(visible_to(user_id))
            .cte("visible")
            .prefix_with("MATERIALIZED")  # ranked exactly: the planner cannot use HNSW here
        )
        ranked = visible.c.embedding.cosine_distance(vector)
        nearest = (
            select(visible.c.id, ranked.label("distance")).order_by(ranked).limit(top_k).subquery()
        )
        stmt = (
            select(Chunk, Document.title, nearest.c.distance)
            .join(nearest, nearest.c.id == Chunk.id)
            .join(Document, Document.id == Chunk.document_id)
            .order_by(nearest.c.distance)
        )
    rows = (await session.execute(stmt)).all()
    await session.commit()
    hits = [
        SearchHit(
            document_id=chunk.document_id,
            title=title,
            chunk_id=chunk.id,
            ordinal=chunk.ordinal,
            text=chunk.text,
            score=1.0 - float(dist),
        )
        for chunk, title, dist in rows
    ]
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    return hits
