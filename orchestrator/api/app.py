"""The FastAPI application: long-lived clients in the lifespan, errors mapped to 4xx/5xx."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Request, Response

from orchestrator import __version__, metrics, tracing
from orchestrator.admission import Admission, WorkLimiter
from orchestrator.api.deps import require_key
from orchestrator.api.errors import install_error_handlers
from orchestrator.api.gates import CancelOnDisconnect, KeyGate
from orchestrator.api.limits import BodySizeLimit, CountRefusals, RequestIds
from orchestrator.api.routes import (
    chat,
    documents,
    health,
    openai,
    realtime,
    speech,
    telegram,
    voice,
    web,
)
from orchestrator.auth import RateLimiter
from orchestrator.buckets import DatabaseBuckets, MemoryBuckets
from orchestrator.config import Settings
from orchestrator.db.engine import make_async_engine, make_sessionmaker
from orchestrator.triton.client import TritonGateway
from orchestrator.triton.doctor import ModelDoctor
from orchestrator.triton.launcher import TritonServer
from orchestrator.turn import TurnService

if TYPE_CHECKING:
    from orchestrator.bot import JuneBot
    from orchestrator.discord_bot import JuneDiscord

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, triton_server: TritonServer | None = None) -> FastAPI:
    """Build the app for ``settings``; ``settings.database_url`` must point at a live server.

    With ``triton_server`` (``june serve`` owns the process), a Triton that dies is
    restarted by the app's model doctor; otherwise the doctor only reloads models.
    """
    if not settings.database_url:
        raise ValueError("create_app needs settings.database_url (june serve sets it)")
    traced = tracing.configure(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_async_engine(
            settings.database_url or "",
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_s,
        )
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        buckets = (
            DatabaseBuckets(app.state.sessionmaker)
            if settings.rate_limit_store == "database"
            else MemoryBuckets()
        )  # the per-key limits' state: shared by every replica, or this process's
        app.state.rate_limiter = RateLimiter(
            settings.rate_limit_per_minute, burst=settings.rate_limit_burst, store=buckets
        )
        app.state.admission = Admission(settings)
        app.state.triton = TritonGateway(
            settings.triton_grpc_url,
            timeout_s=settings.triton_request_timeout_s,
            admission=app.state.admission,
            stall_s=settings.stream_stall_check_s,
        )
        app.state.doctor = ModelDoctor(
            app.state.triton,
            settings,
            server=triton_server if settings.triton_restart else None,
        )
        app.state.triton.on_unhealthy = app.state.doctor.suspect
        app.state.triton.on_doubt = app.state.doctor.doubt
        app.state.turns = TurnService(
            settings,
            app.state.triton,
            app.state.sessionmaker,
            admission=app.state.admission,
            work=WorkLimiter(settings.rate_limit_work_per_minute, store=buckets),
        )
        app.state.live_sessions = 0  # open /v1/realtime sessions
        app.state.bot = await _start_bot(settings, app.state.turns)
        app.state.discord = await _start_discord(settings, app.state.turns)
        wyoming = None
        if settings.wyoming_port is not None:
            from orchestrator.wyoming import serve as serve_wyoming

            wyoming = await serve_wyoming(
                app.state.turns, settings.wyoming_host, settings.wyoming_port
            )
        app.state.doctor.start()
        try:
            yield
        finally:
            if wyoming is not None:
                wyoming.close()
            await app.state.doctor.stop()
            if app.state.bot is not None:
                await app.state.bot.stop()
            if app.state.discord is not None:
                await app.state.discord.stop()
            await app.state.triton.close()
            await engine.dispose()
            if traced:
                tracing.shutdown()

    app = FastAPI(
        title="June",
        version=__version__,
        summary="Voice assistant orchestrator: RAG, conversation state and bot I/O.",
        lifespan=lifespan,
    )
    keyed = [Depends(require_key)]  # every endpoint but /health needs an API key
    app.include_router(health.router)
    app.include_router(web.router)  # the voice page: it asks for the key itself
    app.include_router(telegram.router)  # Telegram's secret token, not an API key
    app.include_router(speech.router, dependencies=keyed)
    app.include_router(chat.router, dependencies=keyed)
    app.include_router(documents.router, dependencies=keyed)
    app.include_router(voice.router, dependencies=keyed)
    app.include_router(openai.router, dependencies=keyed)  # the OpenAI shapes, same keys
    app.include_router(realtime.router)  # its key comes in the first message (browsers)
    install_error_handlers(app)
    _install_metrics(app)
    # Outermost last: a client that leaves cancels everything below; the key is checked
    # before anything reads the body, and the body is counted against its limit.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(KeyGate)
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(openai.OpenAIErrors)  # errors on the OpenAI paths in OpenAI's shape
    app.add_middleware(CountRefusals)  # every refusal counted once, whoever gave it
    app.add_middleware(RequestIds)  # outermost: every log line of a request carries its id
    return app


async def _start_bot(settings: Settings, turns: TurnService) -> JuneBot | None:
    """The Telegram bot when a token is set. If Telegram cannot be reached the API still
    serves, and the log says why the bot is not running."""
    if settings.telegram_bot_token is None:
        return None
    from telegram.error import TelegramError

    from orchestrator.bot import JuneBot

    try:
        bot = JuneBot(settings, turns)
        await bot.start()
    except (TelegramError, OSError) as exc:
        log.error("the Telegram bot did not start: %s", exc)
        return None
    return bot


async def _start_discord(settings: Settings, turns: TurnService) -> JuneDiscord | None:
    """The Discord bot when a token is set; as with Telegram, the API serves without it."""
    if settings.discord_bot_token is None:
        return None
    import aiohttp
    import discord

    from orchestrator.discord_bot import JuneDiscord

    bot = JuneDiscord(settings, turns)
    try:
        await bot.start()
    except (discord.DiscordException, aiohttp.ClientError, OSError) as exc:
        log.error("the Discord bot did not start: %s", exc)
        await bot.stop()
        return None
    return bot


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
