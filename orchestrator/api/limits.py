"""ASGI middleware: request ids, and request bodies over the configured size refused (413)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestIds:
    """Every HTTP request and WebSocket session gets an id: the client's ``X-Request-ID``
    when it is 1-128 of ``A-Za-z0-9._:-``, else a new one. It is on every log line made
    while the request is handled (``orchestrator.log.REQUEST_ID``), and comes back in the
    response's (or the WebSocket handshake's) ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from opentelemetry import trace

        from orchestrator.log import REQUEST_ID

        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"")
        request_id = given.decode() if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            await send(message)

        # FastAPI's own server span (its native OpenTelemetry support) carries the id too
        trace.get_current_span().set_attribute("june.request_id", request_id)
        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


# What a refusal is: the client's mistake, its limits, or June being full.
REFUSALS = frozenset({400, 401, 403, 409, 413, 415, 422, 429, 503})


class CountRefusals:
    """``june_refused_total{cause}``: every HTTP answer that refuses, counted once by its
    status, whichever layer gave it (the key gate, the body limit, validation, a route,
    admission). WebSocket refusals travel as events and are counted where they are sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from orchestrator import metrics

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in REFUSALS:
                metrics.REFUSED.labels(cause=str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Reject by ``Content-Length`` before reading, or once a streamed body passes the limit."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return

        seen = 0
        exceeded = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The app may turn BodyTooLarge into its own error; whatever it answers, the
            # client gets the 413 that says why.
            nonlocal replaced
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start" and not replaced:
                replaced = True
                await self._reject(send)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not replaced:
                replaced = True
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await send_json(
            send,
            413,
            f"request body exceeds the limit of {self.max_bytes} bytes",
            {"Connection": "close"},
        )


async def send_json(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    """Answer ``{"detail": ...}`` from ASGI middleware, before any route runs."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
