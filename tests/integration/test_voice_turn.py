"""The voice turn on the real stack: real Triton (Whisper, MiniLM, SmolLM2, Piper), real
Postgres + pgvector. A question asked by voice is answered from the user's own document,
spoken back, remembered for the follow-up, stored once, and kept from other users."""

import base64
import json
import logging
import re
import uuid

import numpy as np
import pytest

from benchmarks.speech import piper_wav
from orchestrator.audio import decode_audio, encode_audio
from tests.conftest import bearer, make_key

log = logging.getLogger(__name__)

FACT = (
    "Office notes. The Zorbit printer is on the fourth floor, next to the kitchen. "
    "Priya replaces the toner of the Zorbit printer every Monday morning."
)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@pytest.fixture(scope="module")
def dana(client, database_url):
    """A user with a private document stating a fact no model can know."""
    key = make_key(database_url, f"dana-{uuid.uuid4().hex[:6]}")
    r = client.post(
        "/v1/documents", json={"title": "Office notes", "text": FACT}, headers=bearer(key)
    )
    assert r.status_code == 201, r.text
    return key, r.json()["id"]


def ask(client, key: str, question: str, **form) -> dict:
    wav = piper_wav(question)
    r = client.post(
        "/v1/voice",
        files={"file": ("question.wav", wav)},
        data={"language": "en", **form},
        headers=bearer(key),
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_voice_question_answered_from_the_users_document_and_remembered(client, dana):
    key, doc_id = dana
    first = ask(client, key, "Which floor is the Zorbit printer on?", format="wav")
    log.info("turn 1: %s -> %s", first["transcript"], first["reply"])
    assert "printer" in first["transcript"].lower()
    assert "fourth" in first["reply"].lower() or "4th" in first["reply"].lower()
    assert doc_id in {s["document_id"] for s in first["sources"]}
    for stage in ("decode", "transcribe", "retrieve", "generate", "synthesise"):
        assert first["timings_ms"][stage] >= 0
    assert "llm" in first["models"] and "asr_whisper" in first["models"]

    audio = base64.b64decode(first["audio"]["base64"])
    assert first["audio"]["media_type"] == "audio/wav"
    heard = client.post(
        "/v1/transcribe", files={"file": ("reply.wav", audio)}, data={"language": "en"}
    ).json()["text"]
    overlap = len(words(heard) & words(first["reply"])) / max(1, len(words(first["reply"])))
    log.info("reply audio heard as %r (overlap %.2f)", heard, overlap)
    assert overlap >= 0.6

    follow = ask(
        client, key, "And who replaces its toner?", conversation_id=first["conversation_id"]
    )
    log.info("turn 2: %s -> %s", follow["transcript"], follow["reply"])
    assert follow["conversation_id"] == first["conversation_id"]
    assert "priya" in follow["reply"].lower()

    convo = client.get(f"/v1/conversations/{first['conversation_id']}", headers=bearer(key))
    assert convo.status_code == 200
    turns = convo.json()["turns"]
    assert [t["ordinal"] for t in turns] == [1, 2]
    assert turns[0]["reply"] == first["reply"] and turns[1]["reply"] == follow["reply"]
    assert turns[0]["sources"][0]["document_id"] == doc_id


def test_retry_with_the_same_request_id_is_stored_once(client, dana):
    key, _ = dana
    request_id = f"req-{uuid.uuid4()}"
    one = ask(client, key, "Which floor is the Zorbit printer on?", request_id=request_id)
    two = ask(client, key, "Which floor is the Zorbit printer on?", request_id=request_id)
    assert two["replayed"] is True and one["replayed"] is False
    assert two["turn_id"] == one["turn_id"] and two["reply"] == one["reply"]
    assert base64.b64decode(two["audio"]["base64"]).startswith(b"OggS")
    turns = client.get(f"/v1/conversations/{one['conversation_id']}", headers=bearer(key))
    assert len(turns.json()["turns"]) == 1


def test_other_users_cannot_read_or_retrieve(client, dana, database_url):
    key, doc_id = dana
    first = ask(client, key, "Which floor is the Zorbit printer on?")
    eve = make_key(database_url, "eve")
    convo = f"/v1/conversations/{first['conversation_id']}"
    assert client.get(convo, headers=bearer(eve)).status_code == 404
    assert client.delete(convo, headers=bearer(eve)).status_code == 404
    wav = piper_wav("Which floor is the Zorbit printer on?")
    r = client.post(
        "/v1/voice",
        files={"file": ("q.wav", wav)},
        data={"conversation_id": first["conversation_id"]},
        headers=bearer(eve),
    )
    assert r.status_code == 404  # continuing someone else's conversation
    theirs = ask(client, eve, "Which floor is the Zorbit printer on?")
    assert doc_id not in {s["document_id"] for s in theirs["sources"]}
    assert "fourth" not in theirs["reply"].lower()
    assert client.delete(convo, headers=bearer(key)).status_code == 204
    assert client.get(convo, headers=bearer(key)).status_code == 404


def test_streamed_turn_sends_text_and_audio_before_done(client, dana):
    key, _ = dana
    wav = piper_wav("Which floor is the Zorbit printer on?")
    events = []
    with client.stream(
        "POST",
        "/v1/voice",
        files={"file": ("q.wav", wav)},
        data={"stream": "true", "language": "en"},
        headers=bearer(key),
    ) as r:
        assert r.status_code == 200
        for block in r.iter_text():
            for line in block.splitlines():
                if line.startswith("event: "):
                    events.append([line[7:], None])
                elif line.startswith("data: "):
                    events[-1][1] = json.loads(line[6:])
    kinds = [k for k, _ in events]
    assert kinds[0] == "transcript" and kinds[-1] == "done"
    assert "delta" in kinds and "audio" in kinds
    assert kinds.index("audio") < kinds.index("done")
    audio = b"".join(base64.b64decode(d["base64"]) for k, d in events if k == "audio")
    assert len(decode_audio(audio, max_seconds=120)) > 16000 * 0.5


@pytest.mark.parametrize(
    ("make_upload", "code", "message"),
    [
        (lambda: encode_audio(np.zeros(16000 * 2, np.float32), rate=16000, fmt="wav"), 422,
         "didn't catch that"),
        (lambda: b"", 400, "empty"),
        (lambda: b"this is not audio at all" * 10, 415, "not a recognised audio format"),
        (lambda: b"OggS" + bytes(2000), 415, ""),
    ],
)  # fmt: skip
def test_bad_audio_gets_4xx_and_stores_nothing(client, dana, make_upload, code, message):
    key, _ = dana
    request_id = f"bad-{uuid.uuid4()}"
    r = client.post(
        "/v1/voice",
        files={"file": ("q.ogg", make_upload())},
        data={"request_id": request_id},
        headers=bearer(key),
    )
    assert r.status_code in (code, 400), r.text
    assert message in r.json()["detail"]
    again = client.post(
        "/v1/voice",
        files={"file": ("q.wav", piper_wav("Hello there."))},
        data={"request_id": request_id},
        headers=bearer(key),
    )
    assert again.status_code == 200 and again.json()["replayed"] is False  # nothing was stored


def test_missing_key_is_refused(settings, client):
    r = client.post(
        "/v1/voice", files={"file": ("q.wav", b"RIFF")}, headers={"authorization": "Bearer nope"}
    )
    assert r.status_code == 401


def test_text_turn_through_chat_remembers_and_can_speak(client, dana):
    key, doc_id = dana
    first = client.post(
        "/v1/chat", json={"text": "Which floor is the Zorbit printer on?"}, headers=bearer(key)
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert "fourth" in body["reply"].lower() and body["audio"] is None
    assert doc_id in {s["document_id"] for s in body["sources"]}
    second = client.post(
        "/v1/chat",
        json={
            "text": "And who replaces its toner?",
            "conversation_id": body["conversation_id"],
            "audio": "mp3",
        },
        headers=bearer(key),
    )
    assert second.status_code == 200, second.text
    spoken = second.json()
    assert "priya" in spoken["reply"].lower()
    assert spoken["audio"]["media_type"] == "audio/mpeg"
    assert len(decode_audio(base64.b64decode(spoken["audio"]["base64"]), max_seconds=60)) > 8000
    both = client.post(
        "/v1/chat", json={"text": "hi", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert both.status_code == 422


def test_a_crash_mid_turn_stores_nothing_and_the_retry_succeeds(settings, dana):
    from fastapi.testclient import TestClient

    from orchestrator.api.app import create_app

    key, _ = dana
    request_id = f"crash-{uuid.uuid4()}"
    wav = piper_wav("Which floor is the Zorbit printer on?")
    with TestClient(
        create_app(settings), headers=bearer(key), raise_server_exceptions=False
    ) as app_client:
        triton = app_client.app.state.triton
        real = triton.synthesize

        async def broken(sentence: str, **kwargs: object):
            raise RuntimeError("TTS died after the LLM answered")

        triton.synthesize = broken
        r = app_client.post(
            "/v1/voice", files={"file": ("q.wav", wav)}, data={"request_id": request_id}
        )
        assert r.status_code == 500
        triton.synthesize = real
        again = app_client.post(
            "/v1/voice", files={"file": ("q.wav", wav)}, data={"request_id": request_id}
        )
        assert again.status_code == 200 and again.json()["replayed"] is False
        convo = app_client.get(f"/v1/conversations/{again.json()['conversation_id']}")
        assert len(convo.json()["turns"]) == 1  # the crashed attempt left no row
        metrics = app_client.get("/metrics").text
        assert 'june_stage_seconds_count{stage="transcribe"}' in metrics
        assert 'june_stage_seconds_count{stage="generate"}' in metrics
