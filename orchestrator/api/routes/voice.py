"""``POST /v1/voice``: audio in, a grounded spoken answer out; and the conversations.

The routes only adapt HTTP to the turn service: a form or JSON body becomes a
:class:`~orchestrator.turn.TurnRequest`, the turn's events become one JSON answer or
server-sent events. Errors raised before the first event (404, 409, 422, 429, 503) are
HTTP errors; after the stream has started they arrive as an ``error`` event.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Header, HTTPException, Response, UploadFile
from fastapi.responses import StreamingResponse

from orchestrator import metrics
from orchestrator.api.deps import PrincipalDep, SettingsDep, TurnsDep
from orchestrator.api.errors import error_event
from orchestrator.api.routes.speech import read_upload
from orchestrator.api.schemas import (
    ChatIn,
    ConversationOut,
    ErrorOut,
    SourceOut,
    TurnAudio,
    TurnOut,
    clean_request_id,
)
from orchestrator.audio import OUTPUT_FORMATS
from orchestrator.auth import Principal
from orchestrator.db import conversations as crud
from orchestrator.turn import ConversationNotFound, Event, TurnRequest, TurnResult, collect

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["voice"])

_ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 404, 409, 413, 415, 422, 429, 502, 503)}


def _turn_out(result: TurnResult, audio: TurnAudio | None) -> TurnOut:
    return TurnOut(
        conversation_id=result.conversation_id,
        turn_id=result.turn_id,
        request_id=result.request_id,
        transcript=result.transcript,
        reply=result.reply,
        sources=[SourceOut(**vars(s)) for s in result.sources],
        timings_ms=result.timings_ms,
        models=result.models,
        replayed=result.replayed,
        interrupted=result.interrupted,
        audio=audio,
    )


def _audio(fmt: str, data: bytes) -> TurnAudio:
    return TurnAudio(
        format=fmt,
        media_type=OUTPUT_FORMATS[fmt].media_type,
        base64=base64.b64encode(data).decode(),
    )


def _sse(event: str, payload: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


@router.post(
    "/voice",
    response_model=TurnOut,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream"},
        **_ERRORS,
    },
)
async def voice(
    turns: TurnsDep,
    caller: PrincipalDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="The spoken question: any audio format.")],
    conversation_id: Annotated[
        uuid.UUID | None, Form(description="Continue this conversation; omit to start one.")
    ] = None,
    request_id: Annotated[
        str | None, Form(max_length=128, description="Idempotency: a retry returns the turn.")
    ] = None,
    language: Annotated[
        str | None, Form(max_length=16, description="Force the ASR language, e.g. 'en'.")
    ] = None,
    format: Annotated[Literal["ogg", "wav", "mp3"], Form(description="Reply audio.")] = "ogg",
    stream: Annotated[bool, Form(description="Server-sent events as each part is ready.")] = False,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> object:
    """One voice turn: transcribe, retrieve from the caller's and shared documents, answer
    with the conversation so far, and speak the answer.

    JSON: the transcript, reply text, cited sources, per-stage timings and the reply audio
    (base64). With ``stream=true``: server-sent events ``transcript``, ``delta`` (reply
    text), ``audio`` (base64 pieces of one OGG/WAV/MP3 stream, sentence by sentence) and
    ``done`` (the stored turn). Audio with no speech gets 422 and nothing is stored.
    Concurrent requests with one ``request_id`` run the turn once; each gets it.
    """
    rid = _request_id(request_id or idempotency_key)
    if language is not None:
        language = language.strip().lower() or None
    request = TurnRequest(
        principal=caller,
        request_id=rid,
        audio=await read_upload(file, settings.max_audio_bytes),
        conversation_id=conversation_id,
        language=language,
        fmt=format,
    )
    return await _answer(turns.run(request), fmt=format, stream=stream)


async def text_turn(turns: TurnsDep, caller: Principal, body: ChatIn) -> object:
    """``POST /v1/chat`` with ``text``: the voice turn without the voice in."""
    assert body.text is not None
    request = TurnRequest(
        principal=caller,
        request_id=_request_id(body.request_id),
        text=body.text,
        conversation_id=body.conversation_id,
        fmt=body.audio,
    )
    return await _answer(turns.run(request), fmt=body.audio, stream=body.stream)


def _request_id(given: str | None) -> str:
    if given is None:
        return str(uuid.uuid4())
    try:
        return clean_request_id(given)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


async def _answer(events: AsyncIterator[Event], *, fmt: str | None, stream: bool) -> object:
    """The turn as JSON, or as server-sent events once its transcript exists."""
    if not stream:
        try:
            result, audio = await collect(events)
        except ConversationNotFound as exc:  # deleted while the turn ran
            raise HTTPException(404, str(exc)) from exc
        return _turn_out(result, _audio(fmt, audio) if fmt else None)
    try:
        first = await anext(events)  # admission, ownership, decoding, ASR: still HTTP errors
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise
    return StreamingResponse(
        _event_stream(first, events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(first: Event, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    try:
        event: Event | None = first
        while event is not None:
            kind, value = event
            if kind == "transcript":
                yield _sse("transcript", {"text": value})
            elif kind == "delta":
                yield _sse("delta", {"text": value})
            elif kind == "audio" and value:
                yield _sse("audio", {"base64": base64.b64encode(value).decode()})  # type: ignore[arg-type]
            elif kind == "done":
                out = _turn_out(value, None)  # type: ignore[arg-type]
                yield _sse("done", json.loads(out.model_dump_json()))
            event = await anext(events, None)
    except Exception as exc:  # the stream is open: report the error in-band
        metrics.TURN_ERRORS.labels(kind="stream").inc()
        fields = error_event(exc)
        if fields["status"] >= 500:
            log.error("turn stream failed: %s", exc, exc_info=fields["status"] == 500)
        yield _sse("error", fields)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


@router.get("/conversations/{conversation_id}", response_model=ConversationOut)
async def get_conversation(
    conversation_id: uuid.UUID, turns: TurnsDep, caller: PrincipalDep
) -> ConversationOut:
    """The caller's conversation, turn by turn (404 for anyone else's)."""
    async with turns.sessions() as session:
        try:
            conversation = await crud.owned_conversation(
                session, user_id=caller.user_id, conversation_id=conversation_id
            )
        except ConversationNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        rows = await crud.history(session, user_id=caller.user_id, conversation_id=conversation_id)
    return ConversationOut.from_rows(conversation, rows)


@router.delete(
    "/conversations/{conversation_id}", status_code=204, responses={404: {"model": ErrorOut}}
)
async def delete_conversation(
    conversation_id: uuid.UUID, turns: TurnsDep, caller: PrincipalDep
) -> Response:
    """Forget a conversation and all its turns."""
    async with turns.sessions() as session:
        deleted = await crud.delete_conversation(
            session, user_id=caller.user_id, conversation_id=conversation_id
        )
    if not deleted:
        raise HTTPException(404, f"no conversation {conversation_id}")
    return Response(status_code=204)
