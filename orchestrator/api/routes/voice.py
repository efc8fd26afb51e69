"""``POST /v1/voice``: audio in, a grounded spoken answer out; and the conversations."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Header, HTTPException, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from sqlalchemy import delete

from orchestrator import metrics
from orchestrator.api.deps import PrincipalDep, SessionDep, SettingsDep
from orchestrator.api.routes.speech import read_upload
from orchestrator.api.schemas import (
    ChatIn,
    ConversationOut,
    ErrorOut,
    SourceOut,
    TurnAudio,
    TurnOut,
)
from orchestrator.audio import OUTPUT_FORMATS, encode_audio
from orchestrator.auth import Principal
from orchestrator.db.models import Conversation
from orchestrator.turn import (
    ConversationNotFound,
    Event,
    NoSpeech,
    Stopwatch,
    TurnResult,
    VoiceTurn,
    collect,
    spoken,
)

router = APIRouter(prefix="/v1", tags=["voice"])

_ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 404, 413, 415, 422, 429, 502, 503)}


def _turn(request: Request) -> VoiceTurn:
    return request.app.state.voice_turn


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
        audio=audio,
    )


async def _replay_audio(turn: VoiceTurn, result: TurnResult, fmt: str) -> TurnAudio:
    """A retried request gets its stored answer spoken again (audio is never stored)."""
    samples, rate = await turn.synthesise(spoken(result.reply) or result.reply)
    return _audio(fmt, encode_audio(samples, rate=rate, fmt=fmt))


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
    request: Request,
    caller: PrincipalDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="The spoken question: any audio format.")],
    conversation_id: Annotated[
        uuid.UUID | None, Form(description="Continue this conversation; omit to start one.")
    ] = None,
    request_id: Annotated[
        str | None, Form(max_length=128, description="Idempotency: a retry returns the turn.")
    ] = None,
    language: Annotated[str | None, Form(description="Force the ASR language, e.g. 'en'.")] = None,
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
    """
    turn = _turn(request)
    request_id = request_id or idempotency_key or str(uuid.uuid4())
    previous = await turn.replay(caller, request_id)
    if previous is not None:
        return _turn_out(previous, await _replay_audio(turn, previous, format))

    await _check_conversation(turn, caller, conversation_id)
    data = await read_upload(file, settings.max_audio_bytes)
    clock = Stopwatch()
    audio = await turn.decode(data, clock)
    try:
        question = await turn.transcribe(audio, language, clock)
    except NoSpeech as exc:
        metrics.TURN_ERRORS.labels(kind="no_speech").inc()
        raise HTTPException(422, str(exc)) from exc
    events = turn.respond(
        caller,
        question=question,
        conversation_id=conversation_id,
        request_id=request_id,
        fmt=format,
        clock=clock,
    )
    if stream:
        return StreamingResponse(
            _event_stream(question, events),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await _collect(events, format)


async def _collect(events: AsyncIterator[Event], fmt: str | None) -> TurnOut:
    """The whole turn as one JSON answer (with its audio when ``fmt`` is set)."""
    try:
        result, audio = await collect(events)
    except ConversationNotFound as exc:  # deleted since it was checked
        raise HTTPException(404, str(exc)) from exc
    return _turn_out(result, _audio(fmt, audio) if fmt else None)


async def _check_conversation(
    turn: VoiceTurn, caller: Principal, conversation_id: uuid.UUID | None
) -> None:
    """Someone else's (or no) conversation: 404 before any work is done."""
    if conversation_id is None:
        return
    try:
        await turn.check_conversation(caller, conversation_id)
    except ConversationNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


async def _event_stream(question: str, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    yield _sse("transcript", {"text": question})  # at once: the client can show it
    try:
        async for kind, value in events:
            if kind == "delta":
                yield _sse("delta", {"text": value})
            elif kind == "audio" and value:
                yield _sse("audio", {"base64": base64.b64encode(value).decode()})  # type: ignore[arg-type]
            elif kind == "done":
                out = _turn_out(value, None)  # type: ignore[arg-type]
                yield _sse("done", json.loads(out.model_dump_json()))
    except Exception as exc:  # the stream is open: report the error in-band
        metrics.TURN_ERRORS.labels(kind="stream").inc()
        yield _sse("error", {"detail": str(exc)})
    finally:
        await events.aclose()


async def text_turn(request: Request, caller: Principal, body: ChatIn) -> TurnOut:
    """``POST /v1/chat`` with ``text``: the voice turn without the voice in."""
    turn = _turn(request)
    assert body.text is not None
    request_id = body.request_id or str(uuid.uuid4())
    previous = await turn.replay(caller, request_id)
    if previous is not None:
        audio = await _replay_audio(turn, previous, body.audio) if body.audio else None
        return _turn_out(previous, audio)
    await _check_conversation(turn, caller, body.conversation_id)
    events = turn.respond(
        caller,
        question=body.text.strip(),
        conversation_id=body.conversation_id,
        request_id=request_id,
        fmt=body.audio,
        clock=Stopwatch(),
    )
    return await _collect(events, body.audio)


def _audio(fmt: str, data: bytes) -> TurnAudio:
    return TurnAudio(
        format=fmt,
        media_type=OUTPUT_FORMATS[fmt].media_type,
        base64=base64.b64encode(data).decode(),
    )


@router.get("/conversations/{conversation_id}", response_model=ConversationOut)
async def get_conversation(
    conversation_id: uuid.UUID, request: Request, session: SessionDep, caller: PrincipalDep
) -> ConversationOut:
    """The caller's conversation, turn by turn (404 for anyone else's)."""
    turn = _turn(request)
    try:
        conversation = await turn.owned_conversation(session, caller, conversation_id)
    except ConversationNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    turns = await turn.history(session, caller, conversation_id)
    return ConversationOut.from_rows(conversation, turns)


@router.delete(
    "/conversations/{conversation_id}", status_code=204, responses={404: {"model": ErrorOut}}
)
async def delete_conversation(
    conversation_id: uuid.UUID, session: SessionDep, caller: PrincipalDep
) -> Response:
    """Forget a conversation and all its turns."""
    result = await session.execute(
        delete(Conversation).where(
            Conversation.id == conversation_id, Conversation.user_id == caller.user_id
        )
    )
    await session.commit()
    if not result.rowcount:
        raise HTTPException(404, f"no conversation {conversation_id}")
    return Response(status_code=204)
