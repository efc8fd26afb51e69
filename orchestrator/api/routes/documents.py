"""The user's documents: ingest, list, delete, search."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Query, Response, status

from orchestrator.api.deps import PrincipalDep, SessionDep, SettingsDep, TritonDep
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
    body: DocumentIn,
    session: SessionDep,
    triton: TritonDep,
    settings: SettingsDep,
    caller: PrincipalDep,
) -> DocumentOut:
    """Chunk the text, embed the chunks through Triton and store them in pgvector.

    The document is the caller's own; ``shared: true`` (admin keys only) makes it readable
    by every user.
    """
    if body.shared and not caller.is_admin:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "only an admin key may store shared documents"
        )
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
        owner_id=None if body.shared else caller.user_id,
        max_words=settings.chunk_max_words,
        overlap_words=settings.chunk_overlap_words,
        batch_size=settings.embed_batch_size,
    )
    return DocumentOut.model_validate(summary, from_attributes=True)


@router.get("/documents", response_model=DocumentList)
async def list_documents(
    session: SessionDep,
    caller: PrincipalDep,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> DocumentList:
    """The caller's documents and the shared ones, newest first."""
    docs = await store.list_documents(session, user_id=caller.user_id, limit=limit, offset=offset)
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
async def delete_document(
    document_id: uuid.UUID, session: SessionDep, caller: PrincipalDep
) -> Response:
    """Delete one of the caller's documents (admin keys: shared ones too)."""
    deleted = await store.delete_document(
        session, document_id=document_id, user_id=caller.user_id, is_admin=caller.is_admin
    )
    if not deleted:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document {document_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/search", response_model=SearchOut, responses=_ERRORS)
async def search(
    body: SearchIn, session: SessionDep, triton: TritonDep, caller: PrincipalDep
) -> SearchOut:
    """The ``top_k`` passages most similar to the query, best first (own + shared documents)."""
    hits = await store.search(
        session,
        triton,
        query=body.query,
        user_id=caller.user_id,
        top_k=body.top_k,
        min_score=body.min_score,
    )
    return SearchOut(
        query=body.query,
        results=[SearchResult.model_validate(h, from_attributes=True) for h in hits],
    )
