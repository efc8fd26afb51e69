"""Audio in: any common container/codec -> 16 kHz mono float32, with PyAV (FFmpeg).

Telegram voice notes are OGG/Opus; uploads may be WAV, MP3, FLAC, M4A/AAC, WebM or
anything else FFmpeg reads. Failures are classified for the API: data that is not audio
at all (415), audio that cannot be decoded (400), too long (413), or empty (400).
"""

from __future__ import annotations

import io
import logging

import av
import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """Base of the audio input errors; ``status`` is the HTTP status to answer with."""

    status = 400


class UnsupportedAudio(AudioError):
    status = 415


class CorruptAudio(AudioError):
    status = 400


class EmptyAudio(AudioError):
    status = 400


class AudioTooLong(AudioError):
    status = 413


def decode_audio(data: bytes, *, max_seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode and resample to mono float32 at ``sample_rate``; raises an :class:`AudioError`."""
    if not data:
        raise EmptyAudio("the upload is empty")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.InvalidDataError, av.error.FFmpegError, ValueError) as exc:
        raise UnsupportedAudio("the upload is not a recognised audio format") from exc
    try:
        streams = container.streams.audio
        if not streams:
            raise UnsupportedAudio("the file has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        limit = int(max_seconds * sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(streams[0]):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    total += len(chunk)
                if total > limit:
                    raise AudioTooLong(f"audio is longer than the limit of {max_seconds:g} s")
            for out in resampler.resample(None):  # flush
                chunks.append(out.to_ndarray().reshape(-1))
        except AudioError:
            raise
        except (av.error.FFmpegError, ValueError) as exc:
            raise CorruptAudio(f"the audio could not be decoded: {exc}") from exc
    finally:
        container.close()
    audio = (
        np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    )
    if audio.size == 0:
        raise EmptyAudio("the file contains no audio samples")
    if len(audio) > limit:
        raise AudioTooLong(f"audio is longer than the limit of {max_seconds:g} s")
    if not np.isfinite(audio).all():
        raise CorruptAudio("the audio contains invalid samples")
    return np.clip(audio, -1.0, 1.0)
