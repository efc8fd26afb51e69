"""ASGI middleware that refuses request bodies over the configured size with 413."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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
