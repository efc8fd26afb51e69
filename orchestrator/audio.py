"""Audio in and out, with PyAV (FFmpeg).

In: any common container/codec -> 16 kHz mono float32. Telegram voice notes are
OGG/Opus; uploads may be WAV, MP3, FLAC, M4A/AAC, WebM or anything else FFmpeg reads.
Failures are classified for the API: data that is not audio at all (415), audio that
cannot be decoded (400), too long (413), or empty (400).

Out: float32 mono at the voice's rate -> OGG/Opus (what Telegram voice notes use), WAV,
MP3, AAC, FLAC or raw PCM (live playback, OpenAI's pcm), encoded incrementally so a reply
can stream sentence by sentence.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import av
import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MIN_INPUT_RATE = 4000  # below this no speech survives (a header that lies, or a bad file)


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
        declared = streams[0].rate or streams[0].codec_context.sample_rate or 0
        if declared and declared < MIN_INPUT_RATE:
            raise CorruptAudio(
                f"the audio's sample rate is {declared} Hz; speech needs at least {MIN_INPUT_RATE}"
            )
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


def speech_seconds(
    audio: np.ndarray, *, sample_rate: int = SAMPLE_RATE, frame_s: float = 0.03
) -> float:
    """Seconds of ``audio`` loud enough, above its own noise floor, to be speech.

    A frame counts when its RMS is over -50 dBFS and over three times the quietest tenth
    of the clip's frames: steady noise (hiss, hum, white noise) raises its own floor and
    counts for nothing, a click counts for a frame or two, silence for nothing. Speech,
    which rises and falls by far more than 10 dB, counts.
    """
    n = int(sample_rate * frame_s)
    frames = len(audio) // n
    if frames == 0:
        return 0.0
    rms = np.sqrt(np.mean(np.square(audio[: frames * n].reshape(frames, n)), axis=1))
    floor = float(np.percentile(rms, 10))
    voiced = (rms > 10 ** (-50 / 20)) & (rms > 3 * floor)
    return float(voiced.sum() * frame_s)


MIN_SPEECH_SECONDS = 0.2  # less voiced audio than this is noise, a click or a cut-off file


def has_speech(audio: np.ndarray) -> bool:
    """Whether ``audio`` holds enough voiced sound to be worth transcribing."""
    return speech_seconds(audio) >= MIN_SPEECH_SECONDS


@dataclass(frozen=True)
class OutputFormat:
    """An audio format June can answer with."""

    name: str
    container: str
    codec: str
    media_type: str
    rate: int | None  # None: keep the voice's own rate
    bit_rate: int | None = None


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    # libopus encodes 8/12/16/24/48 kHz only; 48 kHz is what Telegram clients expect.
    "ogg": OutputFormat("ogg", "ogg", "libopus", "audio/ogg", 48000, 32000),
    "wav": OutputFormat("wav", "wav", "pcm_s16le", "audio/wav", None),
    "mp3": OutputFormat("mp3", "mp3", "libmp3lame", "audio/mpeg", None, 64000),
    # raw 16-bit little-endian samples at the voice's rate, for live playback (WebSocket)
    "pcm16": OutputFormat("pcm16", "s16le", "pcm_s16le", "audio/L16", None),
    # the OpenAI speech API's others: AAC (ADTS), FLAC, and raw PCM at 24 kHz
    "aac": OutputFormat("aac", "adts", "aac", "audio/aac", None, 64000),
    "flac": OutputFormat("flac", "flac", "flac", "audio/flac", None),
    "pcm": OutputFormat("pcm", "s16le", "pcm_s16le", "audio/pcm", 24000),
}


class AudioEncoder:
    """Encode float32 mono audio piece by piece; each call returns the bytes ready so far.

    ``flush_packets`` makes the muxer hand over every packet as it is written, so a
    streaming response sends the first sentence while the next is being synthesised.
    WAV written to a stream carries no final size (players read it to the end).
    """

    def __init__(self, fmt: OutputFormat, input_rate: int) -> None:
        self.format = fmt
        self.input_rate = input_rate
        self._buffer = io.BytesIO()
        options = {"flush_packets": "1", "fflags": "+bitexact"}
        if fmt.container == "ogg":
            options["page_duration"] = "100000"  # µs: close an Ogg page every 0.1 s
        if fmt.container == "mp3":
            options["write_xing"] = "0"  # no seek header: it would need a rewrite at the end
        self._container = av.open(self._buffer, mode="w", format=fmt.container, options=options)
        rate = fmt.rate or input_rate
        self._stream = self._container.add_stream(fmt.codec, rate=rate)
        self._stream.layout = "mono"
        if fmt.bit_rate:
            self._stream.bit_rate = fmt.bit_rate
        self._resampler = av.AudioResampler(
            format=self._stream.format.name, layout="mono", rate=rate
        )
        self._read = 0
        self._closed = False

    def _take(self) -> bytes:
        data = self._buffer.getvalue()[self._read :]
        if self._read == 0 and data[:4] == b"RIFF":
            data = _unsized_wav_header(data)
        self._read += len(data)
        return data

    def getvalue(self) -> bytes:
        """The whole file after :meth:`close` (WAV with its final sizes filled in)."""
        return self._buffer.getvalue()

    def _encode(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)

    def write(self, samples: np.ndarray) -> bytes:
        """Encode more samples; returns the encoded bytes now ready (may be empty)."""
        if samples.size:
            frame = av.AudioFrame.from_ndarray(
                np.clip(samples, -1.0, 1.0).astype(np.float32).reshape(1, -1),
                format="flt",
                layout="mono",
            )
            frame.sample_rate = self.input_rate
            self._encode(self._resampler.resample(frame))
        return self._take()

    def close(self) -> bytes:
        """Flush the encoder and the container; returns the remaining bytes."""
        if self._closed:
            return b""
        self._closed = True
        self._encode(self._resampler.resample(None))
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._take()


def _unsized_wav_header(data: bytes) -> bytes:
    """A streamed WAV cannot know its size: mark RIFF and data sizes "unknown" (0xFFFFFFFF)."""
    at = data.find(b"data", 12)
    if at < 0 or len(data) < at + 8:
        return data
    unknown = b"\xff\xff\xff\xff"
    return data[:4] + unknown + data[8 : at + 4] + unknown + data[at + 8 :]


def encode_audio(samples: np.ndarray, *, rate: int, fmt: str) -> bytes:
    """Encode a whole clip in one go (``fmt``: ogg, wav or mp3)."""
    encoder = AudioEncoder(OUTPUT_FORMATS[fmt], rate)
    encoder.write(samples)
    encoder.close()
    return encoder.getvalue()
