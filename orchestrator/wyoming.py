"""A Wyoming server (Home Assistant's voice protocol) on the same Triton models.

Home Assistant's Wyoming integration connects over TCP and speaks JSON-line events:

    describe -> info (the served Whisper and voice)
    transcribe, audio-start, audio-chunk..., audio-stop -> transcript
    synthesize -> audio-start, audio-chunk..., audio-stop
    synthesize-start, synthesize-chunk..., synthesize-stop -> the same audio, sentence by
        sentence as the text arrives, then synthesize-stopped

Audio in is converted to 16 kHz mono 16-bit; speech out is 16-bit mono at the voice's rate.
The framing is read here with limits (event header, data and payload sizes, audio length),
so a malformed or oversized event gets an ``error`` event and a closed connection, and
the server goes on. Wyoming has no authentication: it binds to 127.0.0.1 unless
``JUNE_WYOMING_HOST`` says otherwise, and all its work counts against one key's budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from orchestrator import __version__
from orchestrator.admission import Overloaded, RateLimited, work_units
from orchestrator.api.errors import public_detail
from orchestrator.audio import SAMPLE_RATE
from orchestrator.triton.client import Speech
from orchestrator.tts import SentenceSpeaker, TextTooLong, check_length, split_sentences
from orchestrator.turn import SentenceBuffer, TurnService

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
MAX_DATA_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 1024 * 1024  # one audio chunk
CHUNK_SAMPLES = 1024  # speech out, per audio-chunk
WYOMING_KEY = uuid.UUID(int=0x57594F4D494E47)  # the work budget all Wyoming clients share


class BadEvent(ValueError):
    """A malformed, unknown-framed or oversized event: answered with ``error``, then closed."""


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event (None at the end of the stream), Wyoming's framing with limits."""
    try:
        line = await reader.readline()
    except ValueError as exc:  # longer than the reader's limit
        raise BadEvent("an event header is too long") from exc
    if not line:
        return None
    try:
        header = json.loads(line)
        kind = header["type"]
        data = header.get("data") or {}
        data_length = int(header.get("data_length") or 0)
        payload_length = int(header.get("payload_length") or 0)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadEvent("an event header is not JSON with a type") from exc
    if not isinstance(kind, str) or not isinstance(data, dict):
        raise BadEvent("an event's type must be a string and its data an object")
    if not 0 <= data_length <= MAX_DATA_BYTES or not 0 <= payload_length <= MAX_PAYLOAD_BYTES:
        raise BadEvent("an event's data or payload is too large")
    if data_length:
        try:
            data.update(json.loads(await reader.readexactly(data_length)))
        except (ValueError, TypeError, AttributeError) as exc:
            raise BadEvent("an event's data is not a JSON object") from exc
    payload = await reader.readexactly(payload_length) if payload_length else None
    return Event(type=kind, data=data, payload=payload)


class WyomingService:
    """What every connection shares: the turn service's gateway, settings and budgets."""

    def __init__(self, turns: TurnService) -> None:
        self.turns = turns
        self.settings = turns.settings
        self._info: Info | None = None

    async def info(self) -> Info:
        if self._info is None:
            languages = sorted(await self.turns.triton.asr_languages())
            june = Attribution(name="June", url="https://github.com/")
            self._info = Info(
                asr=[
                    AsrProgram(
                        name="june-asr",
                        attribution=june,
                        installed=True,
                        description="Whisper on Triton, with Silero VAD trimming",
                        version=__version__,
                        models=[
                            AsrModel(
                                name=self.settings.asr_model,
                                attribution=Attribution(name="OpenAI", url="https://openai.com"),
                                installed=True,
                                description=self.turns.models.get("asr_whisper"),
                                version=None,
                                languages=languages,
                            )
                        ],
                    )
                ],
                tts=[
                    TtsProgram(
                        name="june-tts",
                        attribution=june,
                        installed=True,
                        description="June's voice on Triton, sentence by sentence",
                        version=__version__,
                        supports_synthesize_streaming=True,
                        voices=[
                            TtsVoice(
                                name=self.settings.tts_voice,
                                attribution=june,
                                installed=True,
                                description=self.settings.tts_model,
                                version=None,
                                languages=["en"],
                            )
                        ],
                    )
                ],
            )
        return self._info


class WyomingConnection:
    """One client's events, in order (see the module docstring)."""

    def __init__(
        self, service: WyomingService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.service = service
        self.turns = service.turns
        self.settings = service.settings
        self.reader, self.writer = reader, writer
        self.language: str | None = None
        self.converter = AudioChunkConverter(rate=SAMPLE_RATE, width=2, channels=1)
        self.audio: bytearray | None = None  # 16 kHz 16-bit mono, between start and stop
        self.streaming: tuple[SentenceBuffer, SentenceSpeaker] | None = None
        self.voice_started = False

    async def write(self, event: Event) -> None:
        await async_write_event(event, self.writer)

    async def run(self) -> None:
        try:
            while True:
                try:
                    event = await asyncio.wait_for(
                        read_event(self.reader), self.settings.realtime_idle_timeout_s
                    )
                except BadEvent as exc:
                    await self.write(Error(text=str(exc), code="bad-event").event())
                    return
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                if event is None:
                    return
                try:
                    await self.handle(event)
                except (Overloaded, RateLimited) as exc:
                    await self.write(Error(text=str(exc), code="busy").event())
                except BadEvent as exc:
                    await self.write(Error(text=str(exc), code="bad-event").event())
                    return
                except Exception as exc:  # a failed request: said, and the connection goes on
                    status, detail = public_detail(exc)
                    if status >= 500:
                        log.warning("wyoming: %s", exc)
                    await self.write(Error(text=detail, code=str(status)).event())
        except (ConnectionError, OSError):
            pass
        finally:
            if self.streaming is not None:
                self.streaming[1].cancel()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def handle(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write((await self.service.info()).event())
        elif Transcribe.is_type(event.type):
            self.language = Transcribe.from_event(event).language
        elif AudioStart.is_type(event.type):
            self.audio = bytearray()
        elif AudioChunk.is_type(event.type):
            await self.heard(event)
        elif AudioStop.is_type(event.type):
            await self.transcribe()
        elif SynthesizeStart.is_type(event.type):
            self.streaming = (SentenceBuffer(), self.speaker())
            self.voice_started = False
        elif SynthesizeChunk.is_type(event.type) and self.streaming is not None:
            sentences, speaker = self.streaming
            for sentence in sentences.push(SynthesizeChunk.from_event(event).text):
                await self.charge_text(sentence)
                speaker.add(sentence)
            async for _, speech in speaker.ready():
                await self.say(speech)
        elif SynthesizeStop.is_type(event.type) and self.streaming is not None:
            (sentences, speaker), self.streaming = self.streaming, None
            for sentence in sentences.flush():
                await self.charge_text(sentence)
                speaker.add(sentence)
            async for _, speech in speaker.drain():
                await self.say(speech)
            await self.end_voice()
            await self.write(SynthesizeStopped().event())
        elif Synthesize.is_type(event.type):
            if self.streaming is None:  # streaming clients send it too, for old servers
                await self.synthesize(Synthesize.from_event(event).text)
        else:
            await self.write(
                Error(text=f"unsupported event {event.type!r}", code="unsupported").event()
            )

    # --- transcribe ----------------------------------------------------------------------

    async def heard(self, event: Event) -> None:
        if self.audio is None:
            raise BadEvent("audio-chunk before audio-start")
        try:
            chunk = self.converter.convert(AudioChunk.from_event(event))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadEvent("an audio-chunk needs rate, width, channels and audio") from exc
        self.audio += chunk.audio
        if len(self.audio) / 2 / SAMPLE_RATE > self.settings.max_audio_seconds:
            raise BadEvent(f"audio is longer than {self.settings.max_audio_seconds:g} s")

    async def transcribe(self) -> None:
        audio, self.audio = self.audio, None
        samples = np.frombuffer(bytes(audio or b""), "<i2").astype(np.float32) / 32768
        await self.turns.work.charge(
            WYOMING_KEY, work_units(audio_seconds=len(samples) / SAMPLE_RATE)
        )
        deadline = time.monotonic() + self.settings.turn_deadline_s
        text = ""
        speech = await self.turns.speech(samples, deadline) if len(samples) else None
        if speech is not None:
            result = await self.turns.triton.transcribe(
                speech, language=self.language, deadline=deadline
            )
            text = result.text.strip()
        await self.write(Transcript(text=text, language=self.language).event())

    # --- synthesise ----------------------------------------------------------------------

    def speaker(self) -> SentenceSpeaker:
        deadline = time.monotonic() + self.settings.turn_deadline_s
        return SentenceSpeaker(
            self.turns.triton,
            model=self.settings.tts_model,
            stream_model=self.settings.tts_stream_model,
            deadline=deadline,
        )

    async def charge_text(self, text: str) -> None:
        try:
            check_length(
                text,
                pace=None,
                max_chars=self.settings.tts_max_chars,
                max_seconds=self.settings.tts_max_audio_seconds,
            )
        except TextTooLong as exc:
            raise BadEvent(str(exc)) from exc
        await self.turns.work.charge(WYOMING_KEY, work_units(characters=len(text)))

    async def synthesize(self, text: str) -> None:
        await self.charge_text(text)
        speaker = self.speaker()
        self.voice_started = False
        try:
            for sentence in split_sentences(text):
                speaker.add(sentence)
            async for _, speech in speaker.drain():
                await self.say(speech)
        finally:
            speaker.cancel()
        await self.end_voice()

    async def say(self, speech: Speech) -> None:
        if not self.voice_started:
            self.voice_started = True
            await self.write(AudioStart(rate=speech.sample_rate, width=2, channels=1).event())
        pcm = (np.clip(speech.audio, -1, 1) * 32767).astype("<i2").tobytes()
        step = CHUNK_SAMPLES * 2
        for i in range(0, len(pcm), step):
            chunk = AudioChunk(
                rate=speech.sample_rate, width=2, channels=1, audio=pcm[i : i + step]
            )
            await self.write(chunk.event())

    async def end_voice(self) -> None:
        if self.voice_started:
            await self.write(AudioStop().event())
        else:  # nothing speakable: an empty stream, so the client is not left waiting
            await self.write(AudioStart(rate=22050, width=2, channels=1).event())
            await self.write(AudioStop().event())
        self.voice_started = False


async def serve(turns: TurnService, host: str, port: int) -> asyncio.Server:
    """Start the Wyoming server; returns the listening ``asyncio.Server``."""
    service = WyomingService(turns)

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await WyomingConnection(service, reader, writer).run()

    server = await asyncio.start_server(connected, host, port, limit=MAX_HEADER_BYTES)
    log.info("Wyoming (Home Assistant) on tcp://%s:%d", host, port)
    return server
