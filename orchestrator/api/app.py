"""The FastAPI application: long-lived clients in the lifespan, errors mapped to 4xx/5xx."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

from orchestrator import __version__, metrics
from orchestrator.api.deps import require_key
from orchestrator.api.limits import BodySizeLimit
from orchestrator.api.routes import chat, documents, health, speech, telegram, voice
from orchestrator.audio import AudioError
from orchestrator.auth import RateLimiter
from orchestrator.config import Settings
from orchestrator.db.engine import make_async_engine, make_sessionmaker
from orchestrator.triton.client import TritonGateway, TritonInferenceError, TritonUnavailable
from orchestrator.turn import VoiceTurn

if TYPE_CHECKING:
    from orchestrator.bot import JuneBot

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """Build the app for ``settings``; ``settings.database_url`` must point at a live server."""
    if not settings.database_url:
        raise ValueError("create_app needs settings.database_url (june serve sets it)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_async_engine(settings.database_url or "")
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.rate_limiter = RateLimiter(
            settings.rate_limit_per_minute, burst=settings.rate_limit_burst
        )
        app.state.triton = TritonGateway(
            settings.triton_grpc_url, timeout_s=settings.triton_request_timeout_s
        )
        app.state.voice_turn = VoiceTurn(settings, app.state.triton, app.state.sessionmaker)
        app.state.bot = await _start_bot(settings, app.state.voice_turn)
        try:
            yield
        finally:
            if app.state.bot is not None:
                await app.state.bot.stop()
            await app.state.triton.close()
            await engine.dispose()

    app = FastAPI(
        title="June",
        version=__version__,
        summary="Voice assistant orchestrator: RAG, conversation state and bot I/O.",
        lifespan=lifespan,
    )
    keyed = [Depends(require_key)]  # every endpoint but /health needs an API key
    app.include_router(health.router)
    app.include_router(telegram.router)  # Telegram's secret token, not an API key
    app.include_router(speech.router, dependencies=keyed)
    app.include_router(chat.router, dependencies=keyed)
    app.include_router(documents.router, dependencies=keyed)
    app.include_router(voice.router, dependencies=keyed)
    _install_error_handlers(app)
    _install_metrics(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    return app


async def _start_bot(settings: Settings, turn: VoiceTurn) -> JuneBot | None:
    """The Telegram bot when a token is set. If Telegram cannot be reached the API still
    serves, and the log says why the bot is not running."""
    if settings.telegram_bot_token is None:
        return None
    from telegram.error import TelegramError

    from orchestrator.bot import JuneBot

    try:
        bot = JuneBot(settings, turn)
        await bot.start()
    except (TelegramError, OSError) as exc:
        log.error("the Telegram bot did not start: %s", exc)
        return None
    return bot


def _install_error_handlers(app: FastAPI) -> None:
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

    @app.exception_handler(TritonUnavailable)
    async def triton_down(request: Request, exc: TritonUnavailable) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": f"model server unavailable: {exc}"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(TritonInferenceError)
    async def triton_failed(request: Request, exc: TritonInferenceError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_502_BAD_GATEWAY)

    @app.exception_handler(OperationalError)
    async def db_down(request: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": "database unavailable"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(AudioError)
    async def bad_audio(request: Request, exc: AudioError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_400_BAD_REQUEST)


def _install_metrics(app: FastAPI) -> None:
    @app.middleware("http")
    async def record(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status_code = 500
        try:
            response = await call_next(request)
            status_code = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            metrics.HTTP_LATENCY.labels(request.method, path).observe(time.perf_counter() - start)
            metrics.HTTP_REQUESTS.labels(request.method, path, str(status_code)).inc()
