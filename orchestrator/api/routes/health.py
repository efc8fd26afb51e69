"""Liveness of the stack, and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from orchestrator.api.deps import SettingsDep, TritonDep, require_key
from orchestrator.api.schemas import Health

log = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request, triton: TritonDep, settings: SettingsDep) -> JSONResponse:
    """Triton readiness, each pipeline's last real answer (the model doctor probes them),
    and a database round trip. Fast by design: it never waits on a model."""
    doctor = request.app.state.doctor
    triton_up = await triton.ready(doctor.pipelines)
    models = doctor.report()
    try:
        async with request.app.state.sessionmaker() as session:
            await session.execute(text("SELECT 1"))
        db_up = True
    except Exception as exc:  # any failure means "down"; the reason goes to the log
        log.warning("database health check failed: %s", exc)
        db_up = False
    models_up = all(state == "up" for state in models.values())
    ok = triton_up and db_up and models_up
    body = Health(
        status="ok" if ok else "degraded",
        triton="up" if triton_up else "down",
        database="up" if db_up else "down",
        models=models if triton_up else {name: "down" for name in models},
    )
    return JSONResponse(
        body.model_dump(), status_code=200 if ok else 503, headers={"Cache-Control": "no-store"}
    )


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_key)])
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
