"""Every error June answers, mapped once to an HTTP status, a message and its headers.

Used by the app's exception handlers and by streams, whose errors go in-band: the same
error gets the same status and words on every path. Nothing internal (SQL, stack frames)
reaches a client; an unexpected error is a 500 that says only that.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orchestrator.admission import Overloaded, RateLimited
from orchestrator.audio import AudioError
from orchestrator.triton.client import (
    ModelRequestError,
    TritonInferenceError,
    TritonUnavailable,
)
from orchestrator.tts import TextTooLong
from orchestrator.turn import ConversationNotFound, NoSpeech, TurnInProgress

log = logging.getLogger(__name__)


def public_error(exc: BaseException) -> tuple[int, str, dict[str, str]]:
    """(status, message for the client, headers) for ``exc``."""
    if isinstance(exc, Overloaded):
        return 503, str(exc), {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, RateLimited):
        return 429, str(exc), {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, TurnInProgress):
        return 409, str(exc), {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, TritonUnavailable):
        return 503, f"model server unavailable: {exc}", {"Retry-After": "5"}
    if isinstance(exc, PoolTimeout | OperationalError):
        return 503, "database busy or unavailable", {"Retry-After": "2"}
    if isinstance(exc, TritonInferenceError):
        return 502, str(exc), {}
    if isinstance(exc, NoSpeech):
        return 422, str(exc), {}
    if isinstance(exc, ConversationNotFound):
        return 404, str(exc), {}
    if isinstance(exc, AudioError | TextTooLong):
        return exc.status, str(exc), {}
    if isinstance(exc, ModelRequestError | ValueError):
        return 400, str(exc), {}
    return 500, "internal error", {}


def public_detail(exc: BaseException) -> tuple[int, str]:
    status_code, detail, _ = public_error(exc)
    return status_code, detail


def error_event(exc: BaseException) -> dict[str, Any]:
    """An error as an in-band event of a stream or socket: ``status``, ``detail``, and
    ``retry_after`` (seconds) whenever the HTTP answer would carry ``Retry-After``."""
    status_code, detail, headers = public_error(exc)
    fields: dict[str, Any] = {"status": status_code, "detail": detail}
    if "Retry-After" in headers:
        fields["retry_after"] = int(headers["Retry-After"])
    return fields


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(
                {"detail": "request body is not valid JSON (UTF-8)"},
                status_code=status.HTTP_400_BAD_REQUEST,
            )
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in errors
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    async def mapped(request: Request, exc: Exception) -> JSONResponse:
        status_code, detail, headers = public_error(exc)
        # shed load is normal under load: counted, not logged at WARNING for each request
        shed = isinstance(exc, Overloaded | RateLimited)
        log.log(
            logging.DEBUG if shed or status_code < 500 else logging.WARNING,
            "%s %s: %s",
            request.method,
            request.url.path,
            exc,
        )
        return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)

    for kind in (
        Overloaded,
        RateLimited,
        TurnInProgress,
        TritonUnavailable,
        TritonInferenceError,
        PoolTimeout,
        OperationalError,
        DBAPIError,
        NoSpeech,
        ConversationNotFound,
        AudioError,
        ModelRequestError,
        ValueError,
    ):
        app.add_exception_handler(kind, mapped)  # type: ignore[arg-type]
