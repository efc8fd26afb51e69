"""``/v1/realtime``: live voice over a WebSocket (the protocol is in the README).

The route only adapts the socket to :class:`~orchestrator.realtime.LiveSession`: it
authenticates the first message (or the ``Authorization`` header), admits the session,
turns binary messages into samples and JSON messages into ``commit`` / ``interrupt``, and
sends the session's events. A client that breaks the protocol gets an ``error`` event and
a closed socket; one that leaves has its work cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from typing import Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocketState

from orchestrator import metrics
from orchestrator.admission import Overloaded, RateLimited
from orchestrator.api.errors import error_event
from orchestrator.api.gates import key_from
from orchestrator.audio import SAMPLE_RATE
from orchestrator.auth import AuthError, Principal, authenticate
from orchestrator.db import conversations as crud
from orchestrator.db.conversations import ConversationNotFound
from orchestrator.realtime import AudioInput, LiveSession, SessionError

log = logging.getLogger(__name__)
router = APIRouter(tags=["realtime"])

START_TIMEOUT_S = 10.0  # the first message must come this soon
SEND_TIMEOUT_S = 10.0  # a client that reads nothing for this long is dropped

# close codes (RFC 6455 and the IANA registry)
POLICY = 1008  # bad or missing key
UNSUPPORTED = 1003  # a message the protocol does not have
TOO_BIG = 1009
TRY_LATER = 1013  # overloaded or rate-limited


class Start(BaseModel):
    """The first message: who is calling and how the audio comes."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["start"]
    key: str | None = Field(None, description="The API key, when no header could carry it.")
    conversation_id: uuid.UUID | None = None
    language: str | None = Field(None, max_length=16)
    input: Literal["pcm16", "opus"] = "pcm16"
    turn_detection: Literal["vad", "manual"] = "vad"


class Closed(Exception):
    """The session is over: ``code`` and ``reason`` for the close frame."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class SocketOutbox:
    """The session's events as JSON text messages, its audio as binary messages."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._lock = asyncio.Lock()
        self.gone = False

    async def _send(self, message: dict) -> None:
        if self.gone:
            return
        async with self._lock:
            try:
                await asyncio.wait_for(self.ws.send(message), SEND_TIMEOUT_S)
            except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
                self.gone = True  # the reader notices and ends the session

    async def event(self, kind: str, **fields: object) -> None:
        text = json.dumps({"type": kind, **fields}, ensure_ascii=False, default=str)
        await self._send({"type": "websocket.send", "text": text})

    async def audio(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    """Live voice: audio in, transcripts, reply text and reply audio out (see README)."""
    state = ws.app.state
    settings = state.settings
    await ws.accept()
    out = SocketOutbox(ws)
    live: LiveSession | None = None
    admitted = False
    try:
        start, principal = await _start(ws)
        if state.live_sessions >= settings.realtime_max_sessions:
            metrics.REFUSED.labels(cause="503").inc()
            raise Overloaded("June has as many live sessions as it can take", 5)
        state.live_sessions += 1
        admitted = True
        metrics.LIVE_SESSIONS.set(state.live_sessions)
        if start.conversation_id is not None:
            async with state.sessionmaker() as session:
                await crud.owned_conversation(
                    session, user_id=principal.user_id, conversation_id=start.conversation_id
                )
        live = LiveSession(
            state.turns,
            principal,
            out,
            conversation_id=start.conversation_id,
            language=(start.language or "").strip().lower() or None,
            turn_detection=start.turn_detection,
        )
        await out.event(
            "ready",
            input=start.input,
            input_sample_rate=SAMPLE_RATE,
            output="pcm16",
            turn_detection=start.turn_detection,
            end_silence_s=settings.realtime_end_silence_s,
            conversation_id=str(start.conversation_id) if start.conversation_id else None,
        )
        await _listen(ws, live, AudioInput(start.input), out)
    except Closed as exc:
        await _close(ws, out, exc.code, str(exc))
    except (Overloaded, RateLimited) as exc:
        await out.event("error", **error_event(exc))  # 503 or 429, with retry_after
        await _close(ws, out, TRY_LATER, "try again later")
    except ConversationNotFound as exc:
        await out.event("error", **error_event(exc))  # 404
        await _close(ws, out, POLICY, "no such conversation")
    except SessionError as exc:
        await out.event("error", status=exc.status, detail=str(exc))
        await _close(ws, out, TOO_BIG if exc.status == 413 else UNSUPPORTED, "protocol error")
    except WebSocketDisconnect:
        pass
    finally:
        if live is not None:
            await live.close()  # a client that left: its work is cancelled, slots freed
        if admitted:
            state.live_sessions -= 1
            metrics.LIVE_SESSIONS.set(state.live_sessions)


async def _start(ws: WebSocket) -> tuple[Start, Principal]:
    """The ``start`` message and the caller it authenticates (header key or its ``key``)."""
    try:
        message = await asyncio.wait_for(ws.receive(), START_TIMEOUT_S)
    except TimeoutError:
        raise Closed(POLICY, "no start message") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    try:
        start = Start.model_validate_json(message.get("text") or "")
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()[:3]
        ]
        raise SessionError(
            'the first message must be JSON {"type": "start", ...}: ' + "; ".join(problems)
        ) from None
    key = start.key or key_from({k.lower(): v for k, v in ws.scope["headers"]})
    state = ws.app.state
    try:
        async with state.sessionmaker() as session:
            principal = await authenticate(session, key)
    except AuthError as exc:
        metrics.REFUSED.labels(cause="401").inc()
        await SocketOutbox(ws).event("error", status=401, detail=str(exc))
        raise Closed(POLICY, "unauthorised") from None
    except (SQLAlchemyError, OSError) as exc:
        log.warning("realtime: database unavailable for the key check: %s", exc)
        raise Overloaded("database unavailable", 5) from None
    wait = await state.rate_limiter.take(principal.key_id)
    if wait > 0:
        metrics.REFUSED.labels(cause="429").inc()
        raise RateLimited("rate limit exceeded for this key", wait if math.isfinite(wait) else 60)
    return start, principal


async def _listen(ws: WebSocket, live: LiveSession, audio: AudioInput, out: SocketOutbox) -> None:
    settings = ws.app.state.settings
    while not out.gone:
        try:
            message = await asyncio.wait_for(ws.receive(), settings.realtime_idle_timeout_s)
        except TimeoutError:
            await out.event("error", status=408, detail="no message for too long; closing")
            raise Closed(1000, "idle") from None
        if message["type"] == "websocket.disconnect":
            return
        data, text = message.get("bytes"), message.get("text")
        size = len(data) if data is not None else len((text or "").encode())
        if size > settings.realtime_max_message_bytes:
            raise SessionError(
                f"a message is {size} bytes; the limit is {settings.realtime_max_message_bytes}",
                413,
            )
        if data is not None:
            await live.feed(audio.decode(data))
            continue
        try:
            kind = json.loads(text or "").get("type")
        except (ValueError, AttributeError):
            raise SessionError("a text message must be a JSON object with a type") from None
        if kind == "commit":
            await live.commit()
        elif kind == "interrupt":
            await live.interrupt()
        elif kind == "ping":
            await out.event("pong")
        else:
            raise SessionError(f"unknown message type {kind!r} (commit, interrupt, ping)")


async def _close(ws: WebSocket, out: SocketOutbox, code: int, reason: str) -> None:
    if ws.application_state == WebSocketState.CONNECTED and not out.gone:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await ws.close(code, reason)
