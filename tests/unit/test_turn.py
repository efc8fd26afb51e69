"""The voice turn's pure parts: sentence buffering, prompt building, rate limits, keys."""

import uuid
from types import SimpleNamespace

import pytest

from orchestrator.auth import KEY_PREFIX, RateLimiter, hash_key
from orchestrator.config import Settings
from orchestrator.turn import SYSTEM_PROMPT, SentenceBuffer, Source, TurnService, spoken


def test_sentence_buffer_hands_out_the_first_clause_early():
    buffer = SentenceBuffer(first_clause_words=4)
    assert buffer.push("Yes, it") == []  # too short to say on its own
    assert buffer.push(" is on the fourth floor, next to") == ["Yes, it is on the fourth floor,"]
    assert buffer.push(" the kitchen, by the lifts. Then") == ["next to the kitchen, by the lifts."]
    assert buffer.flush() == ["Then"]


def test_sentence_buffer_hands_out_complete_sentences_only():
    buffer = SentenceBuffer(first_clause_words=100)
    assert buffer.push("The printer is on the fou") == []
    assert buffer.push("rth floor. Its toner") == ["The printer is on the fourth floor."]
    assert buffer.push(" is changed on Mondays! And") == ["Its toner is changed on Mondays!"]
    assert buffer.flush() == ["And"]
    assert buffer.flush() == []


def test_citation_markers_are_not_spoken():
    assert spoken("It is on the fourth floor [1]. Toner on Mondays [2][3].") == (
        "It is on the fourth floor. Toner on Mondays."
    )


def test_prompt_has_sources_history_and_question_within_budget(tmp_path):
    settings = Settings(_env_file=None, model_repository=tmp_path, llm_prompt_tokens=400)
    turn = TurnService(settings, triton=None, sessions=None)  # type: ignore[arg-type]
    sources = [Source(1, str(uuid.uuid4()), "Office notes", 0.8, "The printer is upstairs.")]
    history = [
        SimpleNamespace(transcript=f"old question {i} " * 20, reply=f"old answer {i} " * 20)
        for i in range(10)
    ]
    messages = turn.build_prompt("Where is it?", sources, history)  # type: ignore[arg-type]
    assert messages[0]["role"] == "system"
    assert messages[0]["content"] == SYSTEM_PROMPT
    assert messages[-1] == {
        "role": "user",
        "content": "Sources:\n[1] Office notes: The printer is upstairs.\n\nQuestion: Where is it?",
    }
    assert 2 < len(messages) < 2 + 2 * len(history)  # the oldest turns fell off
    assert messages[-2]["content"].startswith("old answer 9")  # the newest stayed


def test_rate_limiter_refills_over_time(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("orchestrator.auth.time.monotonic", lambda: now[0])
    limiter = RateLimiter(per_minute=2)
    key = uuid.uuid4()
    assert limiter.acquire(key) == 0 and limiter.acquire(key) == 0
    wait = limiter.acquire(key)
    assert wait == pytest.approx(30.0)
    now[0] += 30.0
    assert limiter.acquire(key) == 0
    assert limiter.acquire(uuid.uuid4()) == 0  # another key has its own bucket


def test_keys_are_hashed_not_kept():
    assert len(hash_key(KEY_PREFIX + "x")) == 64
    assert hash_key("a") != hash_key("b")
