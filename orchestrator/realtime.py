"""Live voice: a conversation over one connection, with VAD, partial transcripts and barge-in.

The channel adapts a stream of audio to the turn service, in the order the data flows:

    audio in (PCM16 or Opus) -> 16 kHz -> VAD (Triton ``vad``, streamed with its state)
    -> speech started / paused / ended
    -> pieces transcribed at each pause (Triton ``asr``), partial transcripts between them
    -> at the end of speech: the transcript -> a text turn of the turn service
    -> reply text deltas and PCM16 audio out, sentence by sentence

The user's speech while a reply is being made or played (barge-in) stops it at once: the
turn stops generating and synthesising, and stores the reply as far as the user heard it.

Transcribing at every pause inside the speech means that when the end-of-turn silence
has passed, the last piece has been transcribing for most of it: the wait after the end
of speech is the reply's, not the transcription's. The session does no I/O itself: it
talks through an :class:`Outbox`, so it runs the same over a WebSocket or in a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal, Protocol

import av
import numpy as np

from orchestrator import metrics
from orchestrator.admission import Overloaded, work_units
from orchestrator.api.errors import error_event
from orchestrator.audio import SAMPLE_RATE
from orchestrator.auth import Principal
from orchestrator.config import Settings
from orchestrator.turn import (
    Interrupt,
    NoSpeech,
    Spoken,
    Stopwatch,
    TurnRequest,
    TurnResult,
    TurnService,
)

log = logging.getLogger(__name__)

FRAME = 512  # Silero VAD's frame at 16 kHz: 32 ms
FRAME_S = FRAME / SAMPLE_RATE
TICK_FRAMES = 4  # the VAD is asked every 128 ms of audio
PREROLL_S = 0.3  # audio kept before the detected start, so the first phoneme is heard
PAD_S = 0.2  # speech kept after the last voiced frame of a piece
MAX_VAD_BACKLOG_S = 3.0  # audio waiting for an overloaded VAD before the session gives up

InputFormat = Literal["pcm16", "opus"]


class SessionError(ValueError):
    """The client sent something the session cannot take (an ``error`` event, then close)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Outbox(Protocol):
    """Where a session's events go: JSON events and binary audio, in order."""

    async def event(self, kind: str, **fields: object) -> None: ...

    async def audio(self, data: bytes) -> None: ...


# --- voice in: bytes -> 16 kHz samples -----------------------------------------------------


class AudioInput:
    """Binary messages -> 16 kHz mono float32: PCM16 little-endian at 16 kHz, or one raw
    Opus packet a message (as WebCodecs' AudioEncoder makes them), at any Opus rate."""

    def __init__(self, fmt: InputFormat) -> None:
        self.format = fmt
        self._odd = b""
        self._decoder: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        if fmt == "opus":
            self._decoder = av.CodecContext.create("opus", "r")  # type: ignore[assignment]
            self._decoder.sample_rate = 48000  # type: ignore[union-attr]
            self._decoder.layout = "mono"  # type: ignore[union-attr]
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def decode(self, data: bytes) -> np.ndarray:
        if self.format == "pcm16":
            data, self._odd = self._odd + data, b""
            if len(data) % 2:
                data, self._odd = data[:-1], data[-1:]
            return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        assert self._decoder is not None and self._resampler is not None
        try:
            frames = self._decoder.decode(av.Packet(data))
            out = [o.to_ndarray().reshape(-1) for f in frames for o in self._resampler.resample(f)]
        except (av.error.FFmpegError, ValueError) as exc:
            raise SessionError("a binary message is not an Opus packet") from exc
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


# --- where the speech is -------------------------------------------------------------------


@dataclass(frozen=True)
class Activity:
    kind: Literal["start", "pause", "resume", "end"]
    frame: int  # start: the first voiced frame; pause and end: the first silent frame


class VoiceActivity:
    """Silero's hysteresis, online: per-frame speech probabilities -> speech events.

    Speech starts at a frame at ``threshold`` and counts once it has lasted
    ``min_speech_s`` (a click does not). Within speech, frames under ``threshold - 0.15``
    are silence: ``pause_s`` of it is a pause, ``end_s`` the end of the turn.
    """

    def __init__(
        self,
        *,
        pause_s: float,
        end_s: float,
        threshold: float = 0.5,
        min_speech_s: float = 0.25,
        min_silence_s: float = 0.1,
    ) -> None:
        self.threshold = threshold
        self.off = threshold - 0.15
        self.min_speech = max(1, round(min_speech_s / FRAME_S))
        self.blip_silence = max(1, round(min_silence_s / FRAME_S))
        self.pause = max(1, round(pause_s / FRAME_S))
        self.end = max(self.pause, round(end_s / FRAME_S))
        self.frame = 0  # frames seen
        self.speaking = False
        self._candidate: int | None = None  # a possible start, not yet long enough
        self.quiet = 0  # silent frames in a row
        self._paused = False

    def push(self, probs: np.ndarray) -> list[Activity]:
        events: list[Activity] = []
        for p in probs:
            i = self.frame
            self.frame += 1
            if not self.speaking:
                if self._candidate is None:
                    if p >= self.threshold:
                        self._candidate, self.quiet = i, 0
                    continue
                self.quiet = self.quiet + 1 if p < self.off else 0
                if self.quiet >= self.blip_silence:
                    self._candidate = None  # a blip
                elif i + 1 - self._candidate >= self.min_speech:
                    self.speaking, self._paused, self.quiet = True, False, 0
                    events.append(Activity("start", self._candidate))
                    self._candidate = None
                continue
            if p >= self.off:
                if self._paused:
                    events.append(Activity("resume", i))
                self.quiet, self._paused = 0, False
                continue
            self.quiet += 1
            silent_from = i + 1 - self.quiet
            if self.quiet == self.pause:
                self._paused = True
                events.append(Activity("pause", silent_from))
            if self.quiet >= self.end:
                self.speaking, self._paused, self.quiet = False, False, 0
                events.append(Activity("end", silent_from))
        return events

    def reset(self) -> None:
        """The turn was ended by the client (push-to-talk): listen for new speech."""
        self.speaking, self._candidate, self.quiet, self._paused = False, None, 0, False


# --- the session ---------------------------------------------------------------------------


class Recording:
    """The stream's recent audio, addressed by absolute sample index. Appends go into a
    buffer that doubles when full, so a long utterance is not copied at every message."""

    def __init__(self) -> None:
        self._data = np.zeros(SAMPLE_RATE, np.float32)
        self._length = 0
        self.base = 0  # the absolute index of the oldest sample kept

    @property
    def end(self) -> int:
        """The absolute index just past the last sample received."""
        return self.base + self._length

    def append(self, samples: np.ndarray) -> None:
        need = self._length + len(samples)
        if need > len(self._data):
            grown = np.zeros(max(need, 2 * len(self._data)), np.float32)
            grown[: self._length] = self._data[: self._length]
            self._data = grown
        self._data[self._length : need] = samples
        self._length = need

    def clip(self, start: int, end: int) -> np.ndarray:
        """A copy of the samples from ``start`` to ``end`` that are still kept."""
        start, end = max(start, self.base), min(end, self.end)
        return self._data[start - self.base : max(start, end) - self.base].copy()

    def keep_last(self, samples: int) -> None:
        drop = self._length - samples
        if drop > 0:
            self._data[:samples] = self._data[drop : self._length]
            self._length, self.base = samples, self.base + drop


@dataclass
class Playback:
    """A reply's audio as sent: the user hears it from the first piece on, in real time."""

    said: list[Spoken]
    started: float | None = None  # when its first audio went out
    seconds: float = 0.0  # audio sent so far

    def heard_s(self, now: float) -> float:
        return 0.0 if self.started is None else min(self.seconds, now - self.started)

    def playing(self, now: float) -> bool:
        return self.started is not None and now < self.started + self.seconds


class LiveSession:
    """One live conversation: audio in, events and audio out (see the module docstring)."""

    def __init__(
        self,
        turns: TurnService,
        principal: Principal,
        out: Outbox,
        *,
        conversation_id: uuid.UUID | None = None,
        language: str | None = None,
        turn_detection: Literal["vad", "manual"] = "vad",
    ) -> None:
        self.turns = turns
        self.settings: Settings = turns.settings
        self.principal = principal
        self.out = out
        self.conversation_id = conversation_id
        self.language = language
        self.manual = turn_detection == "manual"
        self.vad = VoiceActivity(
            pause_s=self.settings.realtime_pause_s, end_s=self.settings.realtime_end_silence_s
        )
        self._vad_state: np.ndarray | None = None
        self._pending = np.zeros(0, np.float32)  # audio not yet seen by the VAD
        self._vad_retry_at = 0  # after a refused VAD call: wait for this much audio
        self._audio = Recording()
        # the utterance being spoken
        self._start: int | None = None  # its first sample
        self._committed = 0  # the sample up to which pieces are being transcribed
        self._pieces: list[asyncio.Task[str]] = []
        self._partial: asyncio.Task[str] | None = None
        self._partial_span = (0, 0)  # the samples the partial transcript covers
        self._last_partial = 0
        # the reply
        self._reply: asyncio.Task[None] | None = None
        self._interrupt: Interrupt | None = None
        self._playback: Playback | None = None
        self._last: TurnResult | None = None
        self._tasks: set[asyncio.Task] = set()
        self.turn_count = 0

    # --- audio in ------------------------------------------------------------------------

    async def feed(self, samples: np.ndarray) -> None:
        """More of the stream (16 kHz float32); the VAD runs on each whole 128 ms."""
        self._pending = np.concatenate([self._pending, samples])
        self._audio.append(samples)
        tick = TICK_FRAMES * FRAME
        while len(self._pending) >= max(tick, self._vad_retry_at):
            whole = len(self._pending) // FRAME * FRAME
            chunk = self._pending[:whole]
            try:
                probs, self._vad_state = await self.turns.triton.speech_probabilities(
                    chunk, self._vad_state, deadline=time.monotonic() + 5.0
                )
            except Overloaded:
                if len(self._pending) > MAX_VAD_BACKLOG_S * SAMPLE_RATE:
                    raise
                self._vad_retry_at = len(self._pending) + tick  # again a tick later, together
                return
            self._vad_retry_at = 0
            self._pending = self._pending[whole:]
            for activity in self.vad.push(probs):
                await self._on(activity)
        if self._start is not None:
            await self._while_speaking()
        else:
            self._forget_old_audio()

    def _sample(self, frame: int) -> int:
        return frame * FRAME

    @property
    def _heard_to(self) -> int:
        """The absolute sample index just past the last sample received."""
        return self._audio.end

    def _clip(self, start: int, end: int) -> np.ndarray:
        return self._audio.clip(start, end)

    def _forget_old_audio(self) -> None:
        keep = int(PREROLL_S * SAMPLE_RATE) + TICK_FRAMES * FRAME
        if self._audio.end - self._audio.base > 2 * keep:
            self._audio.keep_last(keep)

    async def _on(self, activity: Activity) -> None:
        if activity.kind == "start":
            await self._speech_started(activity.frame)
        elif activity.kind == "pause" and self._start is not None:
            self._transcribe_piece(self._sample(activity.frame))
        elif activity.kind == "end" and self._start is not None and not self.manual:
            await self._speech_ended(self._sample(activity.frame))

    async def _speech_started(self, frame: int) -> None:
        if self._start is not None:
            return  # push-to-talk: still the same utterance
        self._start = max(self._audio.base, self._sample(frame) - int(PREROLL_S * SAMPLE_RATE))
        self._committed, self._last_partial = self._start, self._start
        await self.out.event("speech_started", at_s=round(self._start / SAMPLE_RATE, 3))
        await self.barge_in()

    async def _while_speaking(self) -> None:
        assert self._start is not None
        now = self._heard_to
        if now - self._start > self.settings.realtime_max_utterance_s * SAMPLE_RATE:
            await self._speech_ended(now)  # too long: answer what was said
            return
        interval = self.settings.realtime_partial_interval_s * SAMPLE_RATE
        asr = self.turns.admission.stages["asr"]
        if (
            (self._partial is not None and not self._partial.done())
            or any(not p.done() for p in self._pieces)
            or asr.active >= asr.concurrency  # partials never queue for Whisper
            or now - self._last_partial < interval / 3
        ):
            return
        # A partial starts where the speaker stops for a moment (two silent frames): it then
        # holds all the speech so far, and if the moment becomes a pause, the partial is the
        # piece, started earlier. Speech with no such moment gets one every two intervals.
        gap = self.vad.quiet >= 2 and now - self._last_partial >= interval
        if gap or now - self._last_partial >= 2 * interval:
            self._last_partial = now
            self._partial_span = (self._committed, now)
            self._partial = self._spawn(self._partial_transcript(self._committed, now))

    # --- transcribe ------------------------------------------------------------------------

    def _transcribe_piece(self, speech_end: int) -> None:
        """Transcribe the speech from the last piece's end to ``speech_end`` (the first
        silent sample), in the background. Pieces run at once (Triton batches them) and are
        joined in order. A partial transcript already covering the piece is the piece."""
        speech_end = min(speech_end, self._heard_to)
        end = min(speech_end + int(PAD_S * SAMPLE_RATE), self._heard_to)
        if end - self._committed < int(0.1 * SAMPLE_RATE):
            return
        partial, (start, covered) = self._partial, self._partial_span
        self._partial = None
        if partial is not None and start == self._committed and covered >= speech_end:
            log.debug("piece of %.2f s: its partial transcript", (covered - start) / SAMPLE_RATE)
            self._committed = end
            self._pieces.append(partial)
            return
        if partial is not None:
            partial.cancel()  # the piece supersedes it
        audio, self._committed = self._clip(self._committed, end), end
        log.debug("piece of %.2f s to transcribe", len(audio) / SAMPLE_RATE)
        self._pieces.append(self._spawn(self._piece(audio)))

    async def _piece(self, audio: np.ndarray) -> str:
        await self.turns.work.charge(
            self.principal.key_id, work_units(audio_seconds=len(audio) / SAMPLE_RATE)
        )
        return await self._asr(audio)

    async def _asr(self, audio: np.ndarray) -> str:
        deadline = time.monotonic() + self.settings.triton_request_timeout_s
        try:
            return await self.turns.transcribe(audio, self.language, Stopwatch(), deadline)
        except NoSpeech:
            return ""

    async def _partial_transcript(self, start: int, end: int) -> str:
        """The speech since the last piece, so far (it becomes the piece if the speaker
        pauses without saying more)."""
        log.debug("partial over %.2f s", (end - start) / SAMPLE_RATE)
        audio = self._clip(start, end)
        try:
            text = await self._asr(audio)
        except Overloaded:
            if self._partial is None and self._partial_span == (start, end):
                return await self._piece(audio)  # it was taken as a piece: it must be heard
            return ""  # partials are a courtesy: skipped when the server is busy
        done = [p.result() for p in self._pieces if p.done() and not p.exception()]
        heard = " ".join(t for t in [*done, text] if t)
        if self._start is not None and heard:
            await self.out.event("partial_transcript", text=heard)
        return text

    async def commit(self) -> None:
        """The client says the speech has ended (push-to-talk released)."""
        self.vad.reset()
        if self._start is not None:
            await self._speech_ended(self._heard_to)
        else:
            await self.out.event("transcript", text="", turn=None)  # no speech was heard

    async def _speech_ended(self, speech_end: int) -> None:
        self._transcribe_piece(speech_end)
        pieces, self._pieces = self._pieces, []
        self._start = None
        if self._partial is not None:
            self._partial.cancel()
            self._partial = None
        await self.out.event("speech_stopped")
        self._spawn(self._answer(pieces))

    async def _answer(self, pieces: list[asyncio.Task[str]]) -> None:
        try:
            texts = [await p for p in pieces]
        except Exception as exc:  # reported to the client; the session goes on
            await self._error(exc)
            return
        transcript = " ".join(t.strip() for t in texts if t.strip())
        if not transcript:
            await self.out.event("transcript", text="", turn=None)  # nothing worth a turn
            return
        previous = self._reply
        self._reply = asyncio.current_task()  # type: ignore[assignment]
        if previous is not None and not previous.done():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await previous  # stored before the next turn starts
        await self._run_turn(transcript)

    # --- answer ----------------------------------------------------------------------------

    async def _run_turn(self, transcript: str) -> None:
        self.turn_count += 1
        interrupt = self._interrupt = Interrupt()
        playback = self._playback = Playback(said=[])
        request = TurnRequest(
            principal=self.principal,
            request_id=f"live-{uuid.uuid4()}",
            text=transcript,
            conversation_id=self.conversation_id,
            fmt="pcm16",
            interrupt=interrupt,
        )
        events = self.turns.run(request)
        try:
            async for kind, value in events:
                if kind == "transcript":
                    await self.out.event("transcript", text=value, turn=self.turn_count)
                elif interrupt.is_set() and kind != "done":
                    continue  # talked over: nothing more of this reply goes out
                elif kind == "delta":
                    await self.out.event("delta", text=value)
                elif kind == "spoken":
                    assert isinstance(value, Spoken)
                    playback.said.append(value)
                    await self.out.event(
                        "audio", text=value.text, seconds=round(value.seconds, 3),
                        sample_rate=value.sample_rate, format="pcm16",
                    )  # fmt: skip
                elif kind == "audio" and value:
                    assert isinstance(value, bytes)
                    if playback.started is None:
                        playback.started = time.monotonic()
                    playback.seconds = sum(s.seconds for s in playback.said)
                    await self.out.audio(value)
                elif kind == "done":
                    assert isinstance(value, TurnResult)
                    self._last = value
                    self.conversation_id = value.conversation_id
                    await self.out.event(
                        "turn_done",
                        turn_id=str(value.turn_id),
                        conversation_id=str(value.conversation_id),
                        transcript=value.transcript,
                        reply=value.reply,
                        interrupted=value.interrupted,
                        timings_ms=value.timings_ms,
                    )
        except Exception as exc:  # reported to the client; the session goes on
            await self._error(exc)
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def barge_in(self) -> None:
        """The user talks over the reply: stop it, and keep what they heard of it."""
        now = time.monotonic()
        playback = self._playback
        heard = playback.heard_s(now) if playback is not None else 0.0
        replying = self._reply is not None and not self._reply.done()
        if replying and self._interrupt is not None and not self._interrupt.is_set():
            self._interrupt.set(heard)  # the turn stores what was heard
            metrics.BARGE_INS.inc()
            await self.out.event("interrupted", heard_s=round(heard, 3))
        elif playback is not None and playback.playing(now) and self._last is not None:
            # the turn is stored, its audio still playing: keep what was heard of it
            metrics.BARGE_INS.inc()
            self._playback = None
            try:
                reply = await self.turns.interrupted(
                    self.principal, self._last, playback.said, heard
                )
            except Exception as exc:  # reported; the session goes on
                await self._error(exc)
                return
            await self.out.event(
                "interrupted", heard_s=round(heard, 3), turn_id=str(self._last.turn_id), reply=reply
            )

    async def interrupt(self) -> None:
        """The client stops the reply itself (push-to-talk pressed during playback)."""
        await self.barge_in()

    # --- housekeeping ----------------------------------------------------------------------

    def _spawn(self, work: Awaitable) -> asyncio.Task:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _error(self, exc: BaseException) -> None:
        fields = error_event(exc)
        if fields["status"] >= 500:
            log.error("live turn failed: %s", exc, exc_info=fields["status"] == 500)
        await self.out.event("error", **fields)

    async def close(self) -> None:
        """The client left: cancel every piece of work (their Triton slots are freed)."""
        if self._interrupt is not None:
            self._interrupt.set(0.0)
        tasks = list(self._tasks)
        if self._reply is not None:
            tasks.append(self._reply)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
