"""The user's documents: ingest, list, delete, search."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Query, Response, status

from orchestrator.api.deps import SessionDep, SettingsDep, TritonDep
from orchestrator.api.schemas import (
    DocumentIn,
    DocumentList,
    DocumentOut,
    ErrorOut,
    SearchIn,
    SearchOut,
    SearchResult,
)
from orchestrator.rag import store

router = APIRouter(prefix="/v1", tags=["documents"])

_ERRORS = {
    400: {"model": ErrorOut},
    413: {"model": ErrorOut},
    502: {"model": ErrorOut},
    503: {"model": ErrorOut},
}


@router.post(
    "/documents", status_code=status.HTTP_201_CREATED, response_model=DocumentOut, responses=_ERRORS
)
async def create_document(
    body: DocumentIn, session: SessionDep, triton: TritonDep, settings: SettingsDep
) -> DocumentOut:
    """Chunk the text, embed the chunks through Triton and store them in pgvector."""
    if len(body.text) > settings.max_document_chars:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"document has {len(body.text)} characters; the limit is {settings.max_document_chars}",
        )
    summary = await store.ingest_document(
        session,
        triton,
        title=body.title,
        text_=body.text,
        source=body.source,
        max_words=settings.chunk_max_words,
        overlap_words=settings.chunk_overlap_words,
        batch_size=settings.embed_batch_size,
    )
    return DocumentOut.model_validate(summary, from_attributes=True)


@router.get("/documents", response_model=DocumentList)
async def list_documents(
    session: SessionDep,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> DocumentList:
    docs = await store.list_documents(session, limit=limit, offset=offset)
    return DocumentList(
        documents=[DocumentOut.model_validate(d, from_attributes=True) for d in docs],
        limit=limit,
        offset=offset,
    )


@router.delete(
    "/documents/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"model": ErrorOut}},
)
async def delete_document(document_id: uuid.UUID, session: SessionDep) -> Response:
    if not await store.delete_document(session, document_id=document_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document {document_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/search", response_model=SearchOut, responses=_ERRORS)
async def search(body: SearchIn, session: SessionDep, triton: TritonDep) -> SearchOut:
    """The ``top_k`` passages most similar to the query, best first."""
    hits = await store.search(
        session, triton, query=body.query, top_k=body.top_k, min_score=body.min_score
    )
    return SearchOut(
        query=body.query,
        results=[SearchResult.model_validate(h, from_attributes=True) for h in hits],
    )
