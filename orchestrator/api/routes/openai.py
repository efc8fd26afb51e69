"""OpenAI-compatible routes: chat completions, embeddings, models, transcriptions, speech.

For the clients people already use (the ``openai`` SDKs, Open WebUI, LibreChat, pipecat,
LiveKit Agents), which take a ``base_url``. The fields, defaults, stream chunks and error
shape follow the OpenAI API reference; the work is June's own (the same Triton models, API
keys, rate limits and admission as every other route). Errors on these paths are
``{"error": {"message", "type", "param", "code"}}`` (see :class:`OpenAIErrors`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Request, Response, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from orchestrator.admission import work_units
from orchestrator.api.deps import PrincipalDep, SettingsDep, TritonDep, TurnsDep
from orchestrator.api.limits import ASGIApp, Message, Receive, Scope, Send
from orchestrator.api.routes.chat import chat_thinking, sse_data
from orchestrator.api.routes.speech import (
    check_speech_limits,
    decode_and_charge,
    known_language,
    read_upload,
    synthesis,
)
from orchestrator.api.schemas import strip_controls
from orchestrator.audio import OUTPUT_FORMATS, SAMPLE_RATE
from orchestrator.chat import PromptTooLong, Sampling, fit_messages
from orchestrator.config import Settings
from orchestrator.triton.client import ChatChunk, LlmRequestError
from orchestrator.turn import Event, TurnRequest, TurnResult, collect

router = APIRouter(prefix="/v1", tags=["openai"])

PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/audio/")
CREATED = 1_764_460_800  # 2025-11-30: when June's served models are said to be made
EMBEDDING_MODEL = "all-minilm-l6-v2"
# Chat completions grounded in the caller's documents and kept as a June conversation
RAG_MODEL = "june-rag"
CONVERSATION_HEADER = "X-June-Conversation-Id"


# The voices OpenAI's clients name: each is June's voice (one speaker) until a multi-speaker
# FastPitch is served, when they take its speakers in this order.
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
          "shimmer", "verse")  # fmt: skip
SPEECH_FORMATS = {"mp3": "mp3", "opus": "ogg", "aac": "aac", "flac": "flac", "wav": "wav",
                  "pcm": "pcm"}  # fmt: skip


def _name(value: str) -> str:
    return value.rstrip("/").rsplit("/", 1)[-1]


def served_models(settings: Settings) -> dict[str, str]:
    """The model ids clients may name, each to the pipeline that serves it (OpenAI's own
    speech model names are accepted as aliases, so clients work unchanged)."""
    return {
        _name(settings.llm_model): "llm",
        RAG_MODEL: "rag",
        EMBEDDING_MODEL: "embed",
        _name(settings.asr_model): "asr",
        "whisper-1": "asr",
        _name(settings.tts_voice) if settings.tts_model != "tts" else "fastpitch": "tts",
        "tts-1": "tts",
        "tts-1-hd": "tts",
    }


class ModelNotFound(HTTPException):
    def __init__(self, model: str, kind: str) -> None:
        super().__init__(404, f"the model '{model}' does not exist or is not a {kind} model")


def _check_model(settings: Settings, model: str, pipeline: str) -> str:
    if served_models(settings).get(model) != pipeline:
        kind = {"llm": "chat", "embed": "embedding", "asr": "transcription", "tts": "speech"}
        raise ModelNotFound(model, kind[pipeline])
    return model


# --- models ----------------------------------------------------------------------------


def _model(model_id: str, pipeline: str, turns: Any) -> dict:
    source = {"llm": "llm", "rag": "llm", "embed": "embed_encoder", "asr": "asr_whisper"}.get(
        pipeline, ""
    )
    if pipeline == "tts":
        source = "tts_acoustic" if "tts_acoustic" in turns.models else "tts_piper_vits"
    return {
        "id": model_id,
        "object": "model",
        "created": CREATED,
        "owned_by": "june",
        "source": turns.models.get(source, ""),  # weights and exporter (manifest.json)
    }


@router.get("/models")
async def list_models(settings: SettingsDep, turns: TurnsDep) -> dict:
    """The models this server answers for, with the sources they were built from."""
    return {
        "object": "list",
        "data": [_model(m, p, turns) for m, p in served_models(settings).items()],
    }


@router.get("/models/{model_id}")
async def get_model(model_id: str, settings: SettingsDep, turns: TurnsDep) -> dict:
    pipeline = served_models(settings).get(model_id)
    if pipeline is None:
        raise ModelNotFound(model_id, "served")
    return _model(model_id, pipeline, turns)


# --- chat completions -----------------------------------------------------------------


class ContentPart(BaseModel):
    type: str
    text: str | None = None


class CompletionMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(p.type != "text" for p in self.content):
            raise HTTPException(400, "only text content parts are supported")
        return "".join(p.text or "" for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatTemplateKwargs(BaseModel):
    """What vLLM passes to the chat template; June passes ``enable_thinking`` (Qwen3)."""

    model_config = ConfigDict(extra="ignore")

    enable_thinking: bool | None = None


class ChatCompletionIn(BaseModel):
    """The OpenAI request; fields June cannot honour are refused, unknown ones ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[CompletionMessage] = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(None, ge=1, le=2048)
    max_completion_tokens: int | None = Field(None, ge=1, le=2048)
    # Left out, each takes the served model's default (its generation_config), not OpenAI's.
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    # Beyond OpenAI's fields, as vLLM takes them (the SDK's extra_body):
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0)
    chat_template_kwargs: ChatTemplateKwargs | None = None
    include_reasoning: bool = Field(
        False, description="Return a thinking model's reasoning as reasoning_content."
    )
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="One choice: June makes one answer.")
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return [s for s in stops if s]


def _chunk(cid: str, model: str, delta: dict, finish: str | None) -> dict:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _usage(chunk: ChatChunk) -> dict:
    return {
        "prompt_tokens": chunk.prompt_tokens,
        "completion_tokens": chunk.completion_tokens,
        "total_tokens": chunk.prompt_tokens + chunk.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": chunk.cached_tokens},
    }


@router.post("/chat/completions")
async def chat_completions(
    body: ChatCompletionIn,
    request: Request,
    triton: TritonDep,
    turns: TurnsDep,
    settings: SettingsDep,
    caller: PrincipalDep,
) -> object:
    """A chat completion from the served LLM (no memory, no retrieval), or a stream of
    ``chat.completion.chunk`` events ending with ``[DONE]``. With ``model: june-rag``, a
    June turn instead (see :func:`rag_completion`)."""
    if served_models(settings).get(body.model) == "rag":
        return await rag_completion(body, request, turns, caller)
    model = _check_model(settings, body.model, "llm")
    max_tokens = body.max_completion_tokens or body.max_tokens or 256
    await turns.work.charge(caller.key_id, work_units(tokens=max_tokens))
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for m in body.messages
    ]
    try:
        budget = await triton.prompt_budget(settings.llm_prompt_tokens, max_tokens)
        fitted, _ = fit_messages(messages, budget=budget, count=turns.count_tokens)
    except PromptTooLong as exc:
        raise HTTPException(400, str(exc)) from exc
    asked = body.chat_template_kwargs.enable_thinking if body.chat_template_kwargs else None
    chunks = triton.chat_stream(
        fitted,
        max_tokens=max_tokens,
        sampling=Sampling(body.temperature, body.top_p, body.top_k, body.repetition_penalty),
        stop=body.stop,  # type: ignore[arg-type]
        seed=body.seed,
        thinking=chat_thinking(settings, asked),
    )
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    try:
        first = await anext(chunks, None)  # errors before the stream starts are HTTP errors
    except LlmRequestError as exc:
        raise HTTPException(400, str(exc)) from exc
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(
            _stream(cid, model, first, chunks, usage, request, body.include_reasoning),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    text, thought, final = [], [], first or ChatChunk()
    try:
        chunk = first
        while chunk is not None:
            text.append(chunk.delta)
            thought.append(chunk.reasoning)
            final = chunk
            chunk = await anext(chunks, None)
    except LlmRequestError as exc:
        raise HTTPException(400, str(exc)) from exc
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(text),
                    "refusal": None,
                    **({"reasoning_content": "".join(thought)} if body.include_reasoning else {}),
                },
                "logprobs": None,
                "finish_reason": final.finish_reason or "stop",
            }
        ],
        "usage": _usage(final),
    }


async def _stream(
    cid: str,
    model: str,
    first: ChatChunk | None,
    chunks: AsyncIterator[ChatChunk],
    usage: bool,
    request: Request,
    reasoning: bool = False,
) -> AsyncIterator[bytes]:
    try:
        yield sse_data(_chunk(cid, model, {"role": "assistant", "content": ""}, None))
        chunk = first
        while chunk is not None:
            if reasoning and chunk.reasoning:
                yield sse_data(_chunk(cid, model, {"reasoning_content": chunk.reasoning}, None))
            if chunk.delta:
                yield sse_data(_chunk(cid, model, {"content": chunk.delta}, None))
            if chunk.finish_reason:
                yield sse_data(_chunk(cid, model, {}, chunk.finish_reason))
                if usage:
                    yield sse_data(
                        {**_chunk(cid, model, {}, None), "choices": [], "usage": _usage(chunk)}
                    )
                break
            if await request.is_disconnected():
                return
            chunk = await anext(chunks, None)
        yield sse_data("[DONE]")
    except Exception as exc:  # the stream is open: the error goes in-band, in OpenAI's shape
        yield sse_data(error_body(502, str(exc) or "the model failed"))
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def rag_completion(
    body: ChatCompletionIn, request: Request, turns: Any, caller: Any
) -> object:
    """``june-rag``: the last user message is a turn of June's turn service, answered from
    the caller's documents and the conversation so far, and stored. The conversation is
    the client's ``X-June-Conversation-Id`` header (a new one without it), returned in the
    same header and in ``june.conversation_id``. The messages before the last are not
    used: June keeps the conversation. No ``usage``: the turn does not count tokens."""
    asked = [m for m in body.messages if m.role == "user"]
    if not asked or not asked[-1].text().strip():
        raise HTTPException(400, "messages: june-rag answers the last user message; send one")
    header = request.headers.get(CONVERSATION_HEADER)
    try:
        conversation = uuid.UUID(header) if header else None
    except ValueError:
        raise HTTPException(400, f"{CONVERSATION_HEADER} is not a conversation id") from None
    turn = TurnRequest(
        principal=caller,
        request_id=f"openai-{uuid.uuid4()}",
        text=strip_controls(asked[-1].text()).strip()[:4000],
        conversation_id=conversation,
    )
    events = turns.run(turn)
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    try:
        await anext(events)  # the transcript: admission, ownership and limits are checked
    except BaseException:
        await events.aclose()
        raise
    if body.stream:
        return StreamingResponse(_rag_stream(cid, events), media_type="text/event-stream")
    result, _ = await collect(events)
    return JSONResponse(
        {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": RAG_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.reply, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "june": _june(result),
        },
        headers={CONVERSATION_HEADER: str(result.conversation_id)},
    )


def _june(result: TurnResult) -> dict:
    return {
        "conversation_id": str(result.conversation_id),
        "turn_id": str(result.turn_id),
        "sources": [{"ref": s.ref, "title": s.title, "score": s.score} for s in result.sources],
    }


async def _rag_stream(cid: str, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    try:
        yield sse_data(_chunk(cid, RAG_MODEL, {"role": "assistant", "content": ""}, None))
        async for kind, value in events:
            if kind == "delta":
                yield sse_data(_chunk(cid, RAG_MODEL, {"content": value}, None))
            elif kind == "done":
                assert isinstance(value, TurnResult)
                yield sse_data({**_chunk(cid, RAG_MODEL, {}, "stop"), "june": _june(value)})
        yield sse_data("[DONE]")
    except Exception as exc:  # the stream is open: the error goes in-band, in OpenAI's shape
        yield sse_data(error_body(502, str(exc) or "the turn failed"))
    finally:
        await events.aclose()  # type: ignore[attr-defined]


# --- embeddings ------------------------------------------------------------------------


class EmbeddingsIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] = Field(description="A text or up to 2048 texts (token arrays: 400).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)

    @field_validator("input")
    @classmethod
    def _input(cls, value: str | list[str]) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or len(texts) > 2048:
            raise ValueError("send 1 to 2048 texts")
        if any(not t.strip() for t in texts):
            raise ValueError("a text is empty")
        if any(len(t) > 32_000 for t in texts):
            raise ValueError("a text is longer than 32,000 characters")
        return texts


@router.post("/embeddings")
async def embeddings(
    body: EmbeddingsIn,
    triton: TritonDep,
    turns: TurnsDep,
    settings: SettingsDep,
    caller: PrincipalDep,
) -> dict:
    """The served embedder's L2-normalised vectors, in the caller's order."""
    model = _check_model(settings, body.model, "embed")
    texts: list[str] = body.input  # type: ignore[assignment]
    words = sum(len(t.split()) for t in texts)  # usage: words stand in for tokens
    await turns.work.charge(caller.key_id, work_units(tokens=words))
    vectors = await triton.embed(texts, batch_size=settings.embed_batch_size)
    if body.dimensions is not None and body.dimensions != vectors.shape[1]:
        raise HTTPException(400, f"this model makes {vectors.shape[1]} dimensions only")

    def encode(v: np.ndarray) -> list[float] | str:
        if body.encoding_format == "base64":
            return base64.b64encode(v.astype("<f4").tobytes()).decode()
        return [float(x) for x in v]

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": words, "total_tokens": words},
    }


# --- transcriptions -------------------------------------------------------------------


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return (
        f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"
    )


def subtitles(segments: list[dict], kind: Literal["srt", "vtt"]) -> str:
    sep = "," if kind == "srt" else "."
    cues = [
        (f"{i + 1}\n" if kind == "srt" else "")
        + f"{_clock(seg['start'], sep)} --> {_clock(seg['end'], sep)}\n{seg['text'].strip()}\n"
        for i, seg in enumerate(segments)
    ]
    return ("WEBVTT\n\n" if kind == "vtt" else "") + "\n".join(cues)


@router.post("/audio/transcriptions")
async def transcriptions(
    triton: TritonDep,
    turns: TurnsDep,
    settings: SettingsDep,
    caller: PrincipalDep,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()],
    language: Annotated[str | None, Form(max_length=16)] = None,
    prompt: Annotated[str | None, Form(max_length=4000)] = None,
    response_format: Annotated[
        Literal["json", "text", "srt", "vtt", "verbose_json"], Form()
    ] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
) -> Response:
    """Whisper's transcript. ``verbose_json``, ``srt`` and ``vtt`` have one segment per
    stretch of speech the VAD finds, each transcribed on its own, with its times.
    ``prompt`` and ``temperature`` are accepted and not used: the served Whisper decodes
    greedily, without a prompt."""
    _check_model(settings, model, "asr")
    language = await known_language(triton, language)  # an unknown one: 400 here
    audio = await decode_and_charge(
        await read_upload(file, settings.max_audio_bytes), turns, caller, settings
    )
    deadline = time.monotonic() + settings.turn_deadline_s
    duration = round(len(audio) / SAMPLE_RATE, 3)
    segments: list[dict] = []
    detected = language or ""
    if response_format in ("json", "text"):
        speech = await turns.speech(audio, deadline)
        text = ""
        if speech is not None:
            result = await triton.transcribe(speech, language=language, deadline=deadline)
            text, detected = result.text.strip(), result.language
    else:
        spans = await triton.speech_segments(audio, deadline=deadline)
        results = await asyncio.gather(
            *(
                triton.transcribe(
                    audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)],
                    language=language,
                    deadline=deadline,
                )
                for a, b in spans
            )
        )
        for (a, b), result in zip(spans, results, strict=True):
            if result.text.strip():
                detected = detected or result.language
                segments.append(
                    {
                        "id": len(segments),
                        "seek": 0,
                        "start": round(a, 3),
                        "end": round(b, 3),
                        "text": " " + result.text.strip(),
                        "tokens": [],
                        "temperature": 0.0,
                        "no_speech_prob": result.no_speech_prob,
                    }
                )
        text = " ".join(seg["text"].strip() for seg in segments)
    if response_format == "json":
        return JSONResponse({"text": text})
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    if response_format in ("srt", "vtt"):
        media = "application/x-subrip" if response_format == "srt" else "text/vtt"
        return PlainTextResponse(subtitles(segments, response_format), media_type=media)
    return JSONResponse(
        {
            "task": "transcribe",
            "language": detected,
            "duration": duration,
            "text": text,
            "segments": segments,
        }
    )


# --- speech ----------------------------------------------------------------------------


class SpeechIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str = Field(min_length=1, max_length=4096)
    voice: str
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)

    @field_validator("voice")
    @classmethod
    def _voice(cls, value: str) -> str:
        if value not in VOICES:
            raise ValueError(f"unknown voice; choose one of {', '.join(VOICES)}")
        return value


@router.post("/audio/speech")
async def audio_speech(
    body: SpeechIn, triton: TritonDep, turns: TurnsDep, settings: SettingsDep, caller: PrincipalDep
) -> Response:
    """The input spoken, streamed as it is made (sentence by sentence). ``pcm`` is raw
    16-bit mono at 24 kHz, as OpenAI's; ``opus`` is Ogg/Opus."""
    _check_model(settings, body.model, "tts")
    if not 0.5 <= body.speed <= 2.0:
        raise HTTPException(400, "speed: June speaks at 0.5 to 2 times its normal pace")
    text = strip_controls(body.input)
    await run_in_threadpool(check_speech_limits, text, body.speed, settings)
    await turns.work.charge(caller.key_id, work_units(characters=len(text)))
    return await synthesis(
        triton,
        text,
        OUTPUT_FORMATS[SPEECH_FORMATS[body.response_format]],
        model=settings.tts_model,
        stream_model=settings.tts_stream_model,
        pace=body.speed,
        speaker=None,  # one voice: every OpenAI voice name is June's voice
        stream=True,
    )


# --- errors in OpenAI's shape ------------------------------------------------------------

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}  # fmt: skip
_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


def error_body(status: int, message: str, param: str | None = None) -> dict:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = _CODES.get(status) if status != 404 or "model" in message else None
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class OpenAIErrors:
    """On the OpenAI paths, every JSON error June answers (from the key gate, the size limit,
    validation or a route) is rewritten as ``{"error": {...}}``; validation's 422 becomes
    400 with the offending ``param``, as OpenAI answers it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(PATHS):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] < 400:
                    await send(message)
                    return
                start = message
                return
            if start is None:
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            status, payload = _openai_error(start["status"], bytes(body))
            data = json.dumps(payload).encode()
            headers = [
                (k, v)
                for k, v in start["headers"]
                if k.lower() not in (b"content-length", b"content-type")
            ]
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": data})

        await self.app(scope, receive, rewrite)


def _openai_error(status: int, raw: bytes) -> tuple[int, dict]:
    try:
        detail = json.loads(raw).get("detail", "")
    except (ValueError, AttributeError):
        detail = raw.decode("utf-8", "replace")
    if isinstance(detail, list):  # validation: the first problem, and where it is
        first = detail[0] if detail else {}
        loc = [str(p) for p in first.get("loc", []) if p not in ("body", "query")]
        param = ".".join(loc) or None
        return 400, error_body(400, f"{param}: {first.get('msg', 'invalid')}", param)
    if status in (415, 422):  # not audio, nothing speakable: OpenAI answers these with 400
        status = 400
    return status, error_body(status, str(detail))
