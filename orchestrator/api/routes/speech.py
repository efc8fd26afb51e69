"""Speech endpoints: audio in -> transcript (``asr``); text in -> audio out (``tts``)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, Header, HTTPException, Response, UploadFile, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from orchestrator import metrics
from orchestrator.admission import work_units
from orchestrator.api.deps import PrincipalDep, SettingsDep, TritonDep, TurnsDep
from orchestrator.api.schemas import ErrorOut, SpeakIn, TranscriptOut
from orchestrator.audio import (
    OUTPUT_FORMATS,
    AudioEncoder,
    OutputFormat,
    decode_audio,
)
from orchestrator.auth import Principal
from orchestrator.config import Settings
from orchestrator.triton.client import (
    ModelRequestError,
    Speech,
    TritonGateway,
    TritonInferenceError,
    TritonUnavailable,
)
from orchestrator.tts import check_length, speak
from orchestrator.turn import TurnService

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["speech"])

_ERRORS = {code: {"model": ErrorOut} for code in (400, 413, 415, 422, 502, 503)}


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The uploaded bytes, refusing more than ``max_bytes`` without reading it all."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"audio file exceeds the limit of {max_bytes} bytes",
        )
    return data


async def known_language(triton: TritonGateway, language: str | None) -> str | None:
    """``language`` normalised (None: detect it); 422 when the served Whisper lacks it."""
    language = (language or "").strip().lower() or None
    if language is not None and language not in await triton.asr_languages():
        raise HTTPException(422, f"unsupported language {language!r} for the served Whisper")
    return language


async def decode_and_charge(
    data: bytes, turns: TurnService, caller: Principal, settings: Settings
) -> np.ndarray:
    """The upload as 16 kHz mono, its seconds charged to the caller's work budget."""
    audio = await run_in_threadpool(decode_audio, data, max_seconds=settings.max_audio_seconds)
    await turns.work.charge(caller.key_id, work_units(audio_seconds=len(audio) / 16000))
    return audio


@router.post("/transcribe", response_model=TranscriptOut, responses=_ERRORS)
async def transcribe(
    triton: TritonDep,
    turns: TurnsDep,
    caller: PrincipalDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="Audio: OGG/Opus, WAV, MP3, FLAC, M4A, ...")],
    language: Annotated[
        str | None,
        Form(max_length=16, description="Force a language (e.g. 'en'); detected if omitted."),
    ] = None,
) -> TranscriptOut:
    """Decode any common audio format, resample to 16 kHz mono, transcribe with Whisper.

    Audio with no speech in it (silence, steady noise, a click) gives an empty text
    without a Whisper call; leading and trailing silence are cut by the VAD first."""
    language = await known_language(triton, language)
    data = await read_upload(file, settings.max_audio_bytes)
    start = time.perf_counter()
    audio = await decode_and_charge(data, turns, caller, settings)
    decoded = time.perf_counter()
    deadline = time.monotonic() + settings.turn_deadline_s
    speech = await turns.speech(audio, deadline)
    if speech is None:
        return TranscriptOut(
            text="",
            language=language or "",
            no_speech_prob=1.0,
            duration_s=round(len(audio) / 16000, 3),
            speech_s=0.0,
            timings_ms={"decode": round((decoded - start) * 1000, 1), "transcribe": 0.0},
        )
    result = await triton.transcribe(speech, language=language, deadline=deadline)
    done = time.perf_counter()
    metrics.STAGE_LATENCY.labels(stage="decode").observe(decoded - start)
    metrics.STAGE_LATENCY.labels(stage="transcribe").observe(done - decoded)
    return TranscriptOut(
        text=result.text,
        language=result.language,
        no_speech_prob=result.no_speech_prob,
        duration_s=round(len(audio) / 16000, 3),
        speech_s=round(len(speech) / 16000, 3),
        timings_ms={
            "decode": round((decoded - start) * 1000, 1),
            "transcribe": round((done - decoded) * 1000, 1),
        },
    )


# Accept media types -> output format; the first acceptable one by q-value wins.
_MEDIA_TYPES = {
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/*": "ogg",
    "*/*": "ogg",
}


def choose_format(requested: str | None, accept: str | None) -> OutputFormat:
    """The body's ``format`` wins; else the Accept header; else OGG/Opus. None fits: 406."""
    if requested:
        return OUTPUT_FORMATS[requested]
    if not accept or not accept.strip():
        return OUTPUT_FORMATS["ogg"]
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media.lower() in _MEDIA_TYPES and q > 0:
            ranked.append((-q, index, _MEDIA_TYPES[media.lower()]))
    if not ranked:
        raise HTTPException(
            status.HTTP_406_NOT_ACCEPTABLE,
            "audio is available as audio/ogg (Opus), audio/wav or audio/mpeg",
        )
    return OUTPUT_FORMATS[min(ranked)[2]]


_NOTHING_TO_SAY = "the text has nothing speakable in it (only emoji, symbols or unknown script)"


@router.post(
    "/speak",
    response_class=Response,
    responses={
        200: {
            "content": {OUTPUT_FORMATS[f].media_type: {} for f in ("ogg", "wav", "mp3")},
            "description": "The speech, in the chosen format.",
        },
        **{code: {"model": ErrorOut} for code in (400, 406, 413, 422, 502, 503)},
    },
)
async def speak_text(
    body: SpeakIn,
    triton: TritonDep,
    turns: TurnsDep,
    caller: PrincipalDep,
    settings: SettingsDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Synthesise speech. ``stream: true`` sends each sentence's audio as soon as it is made.

    The work is capped before any is done: by the written length (``tts_max_chars``) and
    by how long the text takes to say once numbers and dates are spelled out
    (``tts_max_audio_seconds``); over either is 413."""
    await run_in_threadpool(check_speech_limits, body.text, body.pace, settings)
    await turns.work.charge(caller.key_id, work_units(characters=len(body.text)))
    fmt = choose_format(body.format, accept)
    return await synthesis(
        triton,
        body.text,
        fmt,
        model=settings.tts_model,
        stream_model=settings.tts_stream_model if body.stream else None,
        pace=body.pace,
        speaker=body.speaker,
        stream=body.stream,
    )


def check_speech_limits(text: str, pace: float | None, settings: Settings) -> None:
    """:class:`~orchestrator.tts.TextTooLong` (413) before any work."""
    check_length(
        text,
        pace=pace,
        max_chars=settings.tts_max_chars,
        max_seconds=settings.tts_max_audio_seconds,
    )


async def synthesis(
    triton: TritonGateway,
    text: str,
    fmt: OutputFormat,
    *,
    model: str,
    pace: float | None,
    speaker: int | None,
    stream: bool,
    stream_model: str | None = None,
) -> Response:
    """``text`` spoken in ``fmt``: whole, or (``stream``) each sentence as soon as it is made
    (the first sentence's first ~0.3 s sooner still, with ``stream_model``)."""
    start = time.perf_counter()
    sentences = speak(
        triton, text, model=model, stream_model=stream_model, pace=pace, speaker=speaker
    )
    first = await anext(sentences, None)
    if first is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, _NOTHING_TO_SAY)
    metrics.STAGE_LATENCY.labels(stage="synthesize_first").observe(time.perf_counter() - start)
    encoder = AudioEncoder(fmt, first.sample_rate)

    if stream:

        async def chunks() -> AsyncIterator[bytes]:
            """The audio as it is made. The status went out with the first piece, so a
            synthesis that fails after it ends the audio there, as a whole file (logged),
            instead of dropping the connection mid-file."""
            try:
                yield await run_in_threadpool(encoder.write, first.audio)
                try:
                    async for speech in sentences:
                        yield await run_in_threadpool(encoder.write, speech.audio)
                except (TritonUnavailable, TritonInferenceError, ModelRequestError) as exc:
                    log.warning("streamed speech cut short after it started: %s", exc)
                yield encoder.close()
            finally:
                await sentences.aclose()

        return StreamingResponse(
            chunks(), media_type=fmt.media_type, headers={"X-Sample-Rate": str(first.sample_rate)}
        )

    pieces: list[Speech] = [first]
    async for speech in sentences:
        pieces.append(speech)
    synthesized = time.perf_counter()
    for speech in pieces:
        await run_in_threadpool(encoder.write, speech.audio)
    encoder.close()
    done = time.perf_counter()
    metrics.STAGE_LATENCY.labels(stage="synthesize").observe(synthesized - start)
    metrics.STAGE_LATENCY.labels(stage="encode").observe(done - synthesized)
    return Response(
        encoder.getvalue(),
        media_type=fmt.media_type,
        headers={
            "X-Audio-Seconds": f"{sum(p.seconds for p in pieces):.3f}",
            "X-Sample-Rate": str(first.sample_rate),
            "X-Timings-Ms": f"synthesize={(synthesized - start) * 1000:.1f},"
            f"encode={(done - synthesized) * 1000:.1f}",
        },
    )
