"""ASGI gates every request passes before a route sees it.

- :class:`KeyGate` checks the API key and the key's rate limit from the headers alone,
  before any body is read or parsed, with a database session held only for the lookup.
  (FastAPI reads a route's body before it resolves the route's dependencies, so a
  dependency would be too late.)
- :class:`CancelOnDisconnect` cancels a request's work when its client hangs up, for
  every endpoint, streaming or not (Starlette only notices for streamed responses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

from sqlalchemy.exc import SQLAlchemyError

from orchestrator import metrics
from orchestrator.api.limits import ASGIApp, Message, Receive, Scope, Send, send_json
from orchestrator.auth import AuthError, authenticate

log = logging.getLogger(__name__)

# Paths anyone may call: liveness, the API docs, Telegram's webhook (its own secret), and
# the voice page at "/" with its files (it asks for the key and sends it itself).
PUBLIC = ("/health", "/docs", "/redoc", "/openapi.json", "/telegram/webhook", "/web/")


def key_from(headers: dict[bytes, bytes]) -> str | None:
    """``X-API-Key``, or ``Authorization: Bearer <key>``."""
    if b"x-api-key" in headers:
        return headers[b"x-api-key"].decode("latin-1").strip()
    scheme, _, value = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


class KeyGate:
    """401 (no or bad key) or 429 (rate limit) from the headers; the body stays unread."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        public = path == "/" or path.startswith(PUBLIC)
        if scope["type"] != "http" or public or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        try:
            async with state.sessionmaker() as session:
                principal = await authenticate(session, key_from(dict(scope["headers"])))
        except AuthError as exc:
            await send_json(send, 401, str(exc), {"WWW-Authenticate": "Bearer"})
            return
        except (SQLAlchemyError, OSError) as exc:
            log.warning("%s: database unavailable for the key check: %s", path, exc)
            await send_json(send, 503, "database unavailable", {"Retry-After": "5"})
            return
        wait = await state.rate_limiter.take(principal.key_id)
        if wait > 0:
            per_minute = state.settings.rate_limit_per_minute
            retry = str(max(1, math.ceil(wait))) if math.isfinite(wait) else "60"
            await send_json(
                send,
                429,
                f"rate limit of {per_minute} requests a minute exceeded for this key",
                {"Retry-After": retry},
            )
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


class CancelOnDisconnect:
    """Run the request; if the client disconnects first, cancel it (and its Triton calls)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = asyncio.Event()
        gone = asyncio.Event()

        async def app_receive() -> Message:
            if body_done.is_set():  # the body is read: the next message is the disconnect
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                body_done.set()
            elif not message.get("more_body", False):
                body_done.set()
            return message

        async def watch() -> None:
            await body_done.wait()
            if not gone.is_set():
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()

        task = asyncio.create_task(self.app(scope, app_receive, send))
        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and gone.is_set():
                # Give a streamed response a moment to end by itself (it sees the
                # disconnect too), then cancel whatever is left.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), 0.05)
                if not task.done():
                    metrics.DISCONNECTS.inc()
                    log.info("%s %s: client left; work cancelled", scope["method"], scope["path"])
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    return
            await task
        finally:
            watcher.cancel()
            if not task.done():
                task.cancel()
