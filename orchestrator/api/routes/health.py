"""Liveness of the stack, and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from orchestrator.api.deps import SessionDep, SettingsDep, TritonDep, require_key
from orchestrator.api.schemas import Health

log = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(session: SessionDep, triton: TritonDep, settings: SettingsDep) -> JSONResponse:
    """Triton readiness (the server and every pipeline June calls) and a database round trip."""
    triton_up = await triton.ready((settings.embed_model, "asr", "llm", settings.tts_model))
    try:
        await session.execute(text("SELECT 1"))
        db_up = True
    except Exception as exc:  # any failure means "down"; the reason goes to the log
        log.warning("database health check failed: %s", exc)
        db_up = False
    body = Health(
        status="ok" if triton_up and db_up else "degraded",
        triton="up" if triton_up else "down",
        database="up" if db_up else "down",
    )
    return JSONResponse(body.model_dump(), status_code=200 if triton_up and db_up else 503)


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_key)])
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
