"""Speech endpoints: audio in -> transcript (``asr``)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile, status
from starlette.concurrency import run_in_threadpool

from orchestrator import metrics
from orchestrator.api.deps import SettingsDep, TritonDep
from orchestrator.api.schemas import ErrorOut, TranscriptOut
from orchestrator.audio import decode_audio

router = APIRouter(prefix="/v1", tags=["speech"])

_ERRORS = {code: {"model": ErrorOut} for code in (400, 413, 415, 422, 502, 503)}


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The uploaded bytes, refusing more than ``max_bytes`` without reading it all."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"audio file exceeds the limit of {max_bytes} bytes",
        )
    return data


@router.post("/transcribe", response_model=TranscriptOut, responses=_ERRORS)
async def transcribe(
    triton: TritonDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="Audio: OGG/Opus, WAV, MP3, FLAC, M4A, ...")],
    language: Annotated[
        str | None, Form(description="Force a language (e.g. 'en'); detected if omitted.")
    ] = None,
) -> TranscriptOut:
    """Decode any common audio format, resample to 16 kHz mono, transcribe with Whisper."""
    if language is not None:
        language = language.strip().lower() or None
    if language is not None and language not in await triton.asr_languages():
        raise HTTPException(422, f"unsupported language {language!r} for the served Whisper")
    data = await read_upload(file, settings.max_audio_bytes)
    start = time.perf_counter()
    audio = await run_in_threadpool(decode_audio, data, max_seconds=settings.max_audio_seconds)
    decoded = time.perf_counter()
    result = await triton.transcribe(audio, language=language)
    done = time.perf_counter()
    metrics.STAGE_LATENCY.labels(stage="decode").observe(decoded - start)
    metrics.STAGE_LATENCY.labels(stage="transcribe").observe(done - decoded)
    return TranscriptOut(
        text=result.text,
        language=result.language,
        no_speech_prob=result.no_speech_prob,
        duration_s=round(len(audio) / 16000, 3),
        timings_ms={
            "decode": round((decoded - start) * 1000, 1),
            "transcribe": round((done - decoded) * 1000, 1),
        },
    )
