"""``/v1/realtime`` driven by a real WebSocket client (``websockets``), against a real
uvicorn server, real Triton (VAD, Whisper, LLM, TTS) and real Postgres.

Small and bounded: every test talks to 127.0.0.1 only, with a fixed number of sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from benchmarks.live_client import LiveClient, silence
from benchmarks.speech import clips, normalise
from tests.conftest import bearer, make_key, wav_bytes
from tests.live_server import LiveServer, live

QUESTION = "What is the weather going to be like in London this weekend?"


@pytest.fixture(scope="module")
def server(triton, database_url) -> Iterator[LiveServer]:
    with live(triton, database_url, turn_max_tokens=24, realtime_max_sessions=8) as s:
        yield s


@pytest.fixture(scope="module")
def key(database_url) -> str:
    return make_key(database_url, "live-user")


def spoken(text: str) -> np.ndarray:
    return next(audio for said, audio in clips() if said == text)


def words(text: str) -> set[str]:
    return set(normalise(text).split())


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 240))


def transcribe(server: LiveServer, key: str, samples: np.ndarray, rate: int) -> str:
    response = httpx.post(
        f"{server.url}/v1/transcribe",
        headers=bearer(key),
        files={"file": ("reply.wav", wav_bytes(samples, rate), "audio/wav")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()["text"]


def test_a_spoken_question_gets_a_streamed_spoken_answer(server, key):
    question = spoken(QUESTION)

    async def talk() -> LiveClient:
        async with LiveClient(server.url, key) as client:
            await client.wait_for("ready")
            await client.send_audio(np.concatenate([silence(0.5), question, silence(1.5)]))
            await client.wait_for("turn_done", timeout=120)
            return client

    client = run(talk())
    kinds = client.kinds
    order = [
        kinds.index(k)
        for k in ("ready", "speech_started", "speech_stopped", "transcript", "delta", "audio")
    ]
    assert order == sorted(order), kinds
    assert "partial_transcript" in kinds  # heard while the question was still being spoken
    assert kinds.count("speech_started") == 1
    transcript = client.events("transcript")[0].body["text"]
    assert {"weather", "london", "weekend"} <= words(transcript)
    done = client.events("turn_done")[0].body
    assert done["transcript"] == transcript and not done["interrupted"]
    deltas = "".join(e.body["text"] for e in client.events("delta"))
    assert done["reply"] == deltas.strip()
    # the reply's audio says the reply
    samples, rate = client.reply_pcm()
    assert rate > 0 and len(samples) > rate  # more than a second of speech
    heard = words(transcribe(server, key, samples, rate))
    said = words(" ".join(e.body["text"] for e in client.events("audio")))
    assert len(heard & said) >= 0.6 * len(said), (heard, said)
    # stored like any other turn, in the conversation the session made
    stored = httpx.get(
        f"{server.url}/v1/conversations/{done['conversation_id']}", headers=bearer(key)
    ).json()
    assert [t["transcript"] for t in stored["turns"]] == [transcript]


def test_silence_and_noise_make_no_turn(server, key):
    rng = np.random.default_rng(1)
    hiss = (0.02 * rng.standard_normal(16000 * 2)).astype(np.float32)

    async def talk() -> LiveClient:
        async with LiveClient(server.url, key) as client:
            await client.wait_for("ready")
            await client.send_audio(np.concatenate([silence(2), hiss]), realtime=False)
            await client.send_json({"type": "commit"})  # "I'm done": nothing was said
            await client.wait_for("transcript")
            await client.send_json({"type": "ping"})
            await client.wait_for("pong")
            return client

    client = run(talk())
    assert "speech_started" not in client.kinds
    assert client.events("transcript")[0].body == {"type": "transcript", "text": "", "turn": None}
    assert "turn_done" not in client.kinds


@pytest.mark.parametrize(
    ("first", "then", "status", "code"),
    [
        ({"type": "start"}, "not json", 400, 1003),  # garbage text
        ({"type": "start"}, {"type": "dance"}, 400, 1003),  # a message the protocol lacks
        ({"type": "start", "input": "opus"}, b"\xff\x00garbage", 400, 1003),  # not an Opus packet
        ({"type": "start"}, b"\x00" * (70 * 1024), 413, 1009),  # over the message limit
        ({"type": "hello"}, None, 400, 1003),  # no start message
        (b"\x00\x01" * 800, None, 400, 1003),  # audio before the start message
        ({"type": "start", "input": "mp3"}, None, 400, 1003),
        ({"type": "start", "conversation_id": str(uuid.uuid4())}, None, 404, 1008),
    ],
)
def test_garbage_gets_an_error_event_and_a_closed_socket(server, key, first, then, status, code):
    async def talk() -> LiveClient:
        client = LiveClient(server.url, key)
        client.ws = await connect(client.url)
        client.reader = asyncio.create_task(client.read())
        if isinstance(first, dict):
            await client.send_json({**first, "key": key})
        else:
            await client.ws.send(first)
        if then is not None:
            await client.wait_for("ready")
            await (client.send_json(then) if isinstance(then, dict) else client.ws.send(then))
        await client.closed()
        return client

    client = run(talk())
    errors = client.events("error")
    assert errors and errors[0].body["status"] == status and errors[0].body["detail"], client.kinds
    assert client.closed_code == code
    assert httpx.get(f"{server.url}/health").status_code == 200  # and the server serves on


def test_the_key_comes_in_a_header_or_the_start_message(server, key):
    async def talk(client: LiveClient) -> LiveClient:
        async with client:
            await client.wait_for("ready", timeout=10)
        return client

    assert run(talk(LiveClient(server.url, None, headers=bearer(key)))).kinds[0] == "ready"
    for bad in (None, "june_nope"):
        with pytest.raises(ConnectionError):
            run(talk(refused := LiveClient(server.url, bad)))
        assert refused.events("error")[0].body["status"] == 401
        assert refused.closed_code == 1008


def test_talking_over_the_reply_stops_it_and_keeps_what_was_heard(server, key):
    question, again = spoken(QUESTION), spoken("Can you read me the last message from David?")

    async def talk() -> LiveClient:
        async with LiveClient(server.url, key) as client:
            await client.wait_for("ready")
            await client.send_audio(np.concatenate([question, silence(0.8)]), realtime=False)
            first_audio = await client.wait_for("audio_bytes", timeout=120)
            # the user speaks while the reply plays
            await client.send_audio(np.concatenate([again, silence(1.0)]))
            interrupted = await client.wait_for("interrupted")
            assert interrupted.at > first_audio.at
            done = await client.wait_for("turn_done")
            await client.wait_for("turn_done", after=client.received.index(done) + 1, timeout=120)
            return client

    client = run(talk())
    first, second = (e.body for e in client.events("turn_done"))
    interrupted = client.events("interrupted")[0]
    cut = client.received.index(interrupted)
    # no more of the first reply's audio after the interruption
    assert "audio_bytes" not in [e.kind for e in client.received[cut : cut + 2]]
    said = " ".join(
        e.body["text"] for e in client.events("audio") if client.received.index(e) < cut
    )
    # stopped while being made (its turn_done says so) or while playing (the event says so)
    heard = first["reply"] if first["interrupted"] else interrupted.body["reply"]
    assert heard.split() == said.split()[: len(heard.split())]  # the start of what was said
    assert len(heard.split()) < len(said.split()) or not said
    assert not second["interrupted"]
    assert {"message", "david"} <= words(second["transcript"])
    # both stored, in order, the first as heard
    stored = httpx.get(
        f"{server.url}/v1/conversations/{first['conversation_id']}", headers=bearer(key)
    ).json()["turns"]
    assert [(t["reply"], t["interrupted"]) for t in stored] == [
        (heard, True),
        (second["reply"], False),
    ]
    stages = server.app.state.admission.stages
    assert all(stages[s].active == 0 for s in ("llm", "tts", "asr", "turn"))


def test_a_client_that_vanishes_mid_turn_frees_its_slots(server, key):
    """Opus in this time (one raw packet a message, as browsers' WebCodecs make them)."""
    from benchmarks.speech import opus_packets

    packets = opus_packets(np.concatenate([spoken(QUESTION), silence(1.0)]))

    async def talk() -> LiveClient:
        async with LiveClient(server.url, key, input="opus") as client:
            await client.wait_for("ready")
            for packet in packets:
                await client.ws.send(packet)
            await client.wait_for("transcript", timeout=60)
            client.ws.transport.abort()  # gone, without a close frame
            return client

    client = run(talk())
    assert {"weather", "london"} <= words(client.events("transcript")[0].body["text"])
    state = server.app.state
    deadline = time.monotonic() + 20
    while state.live_sessions or any(s.active for s in state.admission.stages.values()):
        assert time.monotonic() < deadline, {n: s.active for n, s in state.admission.stages.items()}
        time.sleep(0.1)


def test_sixteen_sessions_at_once_complete_or_are_refused_cleanly(server, key):
    """Eight sessions fit (realtime_max_sessions); the rest are told so at once."""
    question = np.concatenate(
        [spoken("The train to Boston leaves from platform seven."), silence(0.8)]
    )

    async def one() -> LiveClient:
        client = LiveClient(server.url, key)
        async with client:
            try:
                await client.wait_for("ready", timeout=30)
            except ConnectionError:
                return client  # refused
            await client.send_audio(question, realtime=False)
            with contextlib.suppress(ConnectionError):
                await client.wait_for("turn_done", timeout=180)
        return client

    async def crowd() -> list[LiveClient]:
        return await asyncio.gather(*(one() for _ in range(16)))

    clients = run(crowd())
    done = [c for c in clients if "turn_done" in c.kinds]
    refused = [c for c in clients if "turn_done" not in c.kinds]
    for client in refused:
        error = client.events("error")[0].body
        assert error["status"] in (429, 503) and error["retry_after"] >= 1, client.kinds
    assert len(done) >= 4 and len(refused) >= 8 - 4  # eight admitted; some may be shed
    assert all("boston" in words(c.events("turn_done")[0].body["transcript"]) for c in done)
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_push_to_talk_answers_on_commit_not_on_silence(server, key):
    question = spoken("The train to Boston leaves from platform seven.")

    async def talk() -> LiveClient:
        async with LiveClient(server.url, key, turn_detection="manual") as client:
            await client.wait_for("ready")
            await client.send_audio(np.concatenate([question, silence(1.5)]), realtime=False)
            await client.send_json({"type": "ping"})  # everything sent has been heard
            await client.wait_for("pong")
            assert "speech_stopped" not in client.kinds  # silence does not end the turn
            await client.send_json({"type": "commit"})
            await client.wait_for("turn_done", timeout=120)
            return client

    client = run(talk())
    assert client.kinds.count("speech_started") == 1
    assert "boston" in words(client.events("turn_done")[0].body["transcript"])


def test_the_handshake_returns_the_sessions_request_id(server, key):
    async def shake() -> tuple[str, str]:
        async with (
            connect(
                f"{LiveClient(server.url, key).url}", additional_headers={"X-Request-ID": "live-9"}
            ) as given,
            connect(LiveClient(server.url, key).url) as made,
        ):
            return given.response.headers["X-Request-ID"], made.response.headers["X-Request-ID"]

    given, made = run(shake())
    assert given == "live-9" and len(made) == 32
