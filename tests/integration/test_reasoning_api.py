"""A thinking model's reasoning on the real stack: never in a reply, a stream, speech or a
stored turn's reply; returned only when asked, stored only when configured.

No thinking model's weights install offline, and a random model never closes its thinking
(``test_llm_served`` serves one, for the unfinished case). So here the LLM's raw token
stream is scripted as a Qwen3 that thinks and then answers would send it, with both tags
split across tokens. Everything after that stream is real: the gateway's splitting, the
routes, the turn service, Piper in Triton, and PostgreSQL.
"""

import json
import uuid

import pytest
from sqlalchemy import text

from orchestrator.db.engine import make_sync_engine
from orchestrator.triton.client import ChatChunk
from tests.conftest import bearer, make_key
from tests.integration.test_chat_api import sse_events

SECRET = "Zebra-7"
PIECES = [
    "<th", "ink>", "The user asks", " about France.", f" My code word is {SECRET}.", "</",
    "thi", "nk>", "\n\n", "Paris", " is the", " capital", " of France.",
]  # fmt: skip
REPLY = "Paris is the capital of France."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def thinking_llm(client, monkeypatch):
    """The app's LLM stream, scripted; what the TTS is asked to say is recorded."""
    gateway = client.app.state.triton
    spoken: list[str] = []
    synthesize, synthesize_stream = gateway.synthesize, gateway.synthesize_stream

    async def raw_stream(*args, **kwargs):
        for piece in PIECES:
            yield ChatChunk(delta=piece)
        yield ChatChunk(finish_reason="stop", prompt_tokens=12, completion_tokens=len(PIECES))

    async def thinking_mode(model: str = "llm") -> str:
        return "optional"

    async def say(text: str, **kwargs):
        spoken.append(text)
        return await synthesize(text, **kwargs)

    async def say_streamed(text: str, **kwargs):  # a reply's first sentence
        spoken.append(text)
        async for piece in synthesize_stream(text, **kwargs):
            yield piece

    monkeypatch.setattr(gateway, "_chat_stream", raw_stream)
    monkeypatch.setattr(gateway, "thinking_mode", thinking_mode)
    monkeypatch.setattr(gateway, "synthesize", say)
    monkeypatch.setattr(gateway, "synthesize_stream", say_streamed)
    return spoken


def test_chat_json_and_stream_leave_the_reasoning_out(client, thinking_llm):
    body = client.post("/v1/chat", json={"messages": QUESTION}).json()
    assert body["text"] == REPLY and body["reasoning"] is None
    asked = client.post("/v1/chat", json={"messages": QUESTION, "include_reasoning": True})
    assert asked.json()["text"] == REPLY and SECRET in asked.json()["reasoning"]

    for include in (False, True):
        payload = {"messages": QUESTION, "stream": True, "include_reasoning": include}
        with client.stream("POST", "/v1/chat", json=payload) as r:
            events = [e for _, e in sse_events(r) if isinstance(e, dict)]
        assert "".join(e.get("delta", "") for e in events) == REPLY
        assert not any(SECRET in e.get("delta", "") for e in events)
        assert (SECRET in "".join(e.get("reasoning", "") for e in events)) == include


def test_openai_chat_json_and_stream_leave_the_reasoning_out(client, thinking_llm):
    payload = {"model": "smollm2-135m-instruct", "messages": QUESTION}
    message = client.post("/v1/chat/completions", json=payload).json()["choices"][0]["message"]
    assert message["content"] == REPLY and "reasoning_content" not in message
    asked = client.post("/v1/chat/completions", json={**payload, "include_reasoning": True})
    assert SECRET in asked.json()["choices"][0]["message"]["reasoning_content"]

    with client.stream(
        "POST", "/v1/chat/completions", json={**payload, "stream": True, "include_reasoning": True}
    ) as r:
        chunks = [e for _, e in sse_events(r) if isinstance(e, dict)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
    assert "".join(d.get("content", "") for d in deltas) == REPLY
    assert SECRET in "".join(d.get("reasoning_content", "") for d in deltas)
    assert not any(SECRET in d.get("content", "") for d in deltas)


def stored(database_url: str, turn_id: str) -> tuple[str, str | None]:
    engine = make_sync_engine(database_url)
    try:
        with engine.connect() as db:
            row = db.execute(
                text("SELECT reply, reasoning FROM turns WHERE id = :id"), {"id": turn_id}
            ).one()
    finally:
        engine.dispose()
    return row.reply, row.reasoning


@pytest.mark.parametrize("keep", [False, True])
def test_a_spoken_turn_never_says_or_stores_the_reasoning_as_its_reply(
    client, thinking_llm, database_url, monkeypatch, keep
):
    monkeypatch.setattr(client.app.state.turns.settings, "store_reasoning", keep)
    key = make_key(database_url, f"thinker-{uuid.uuid4().hex[:6]}")
    r = client.post(
        "/v1/chat", json={"text": "What is the capital of France?", "audio": "wav"},
        headers=bearer(key),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    turn = r.json()
    assert turn["reply"] == REPLY and SECRET not in json.dumps(turn)
    assert thinking_llm and not any(SECRET in s for s in thinking_llm)  # what TTS was given
    assert "Paris" in " ".join(thinking_llm)
    reply, reasoning = stored(database_url, turn["turn_id"])
    assert reply == REPLY
    assert (reasoning is not None and SECRET in reasoning) == keep
