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


def test_first_clause_goes_out_with_its_comma_not_the_next_token():
    buffer = SentenceBuffer(first_clause_words=4)
    assert buffer.push("The printer is on the fourth floor") == []
    assert buffer.push(",") == ["The printer is on the fourth floor,"]
    # after a digit a comma may be a thousands separator: wait for the next token
    buffer = SentenceBuffer(first_clause_words=4)
    assert buffer.push("The new printer cost 1,") == []
    assert buffer.push("200 dollars in all, and") == ["The new printer cost 1,200 dollars in all,"]


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
    monkeypatch.setattr("orchestrator.buckets.time.monotonic", lambda: now[0])
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


def test_first_clause_is_never_a_list_cut_short():
    buffer = SentenceBuffer(first_clause_words=4)
    # "Please buy milk, eggs," would end mid-list: wait for a clause of its own
    assert buffer.push("Please buy milk, eggs, and bread, then") == []
    assert buffer.push(" come home. And") == ["Please buy milk, eggs, and bread, then come home."]
    buffer = SentenceBuffer(first_clause_words=4)
    assert buffer.push("Sure, the printer is upstairs, next") == ["Sure, the printer is upstairs,"]


def test_passages_are_cut_to_the_sentences_the_question_needs():
    from orchestrator.rag.focus import relevant_sentences

    passage = (
        "Office notes for the spring. The kitchen was repainted in March. "
        "The Zorbit printer is on the fourth floor. Parking is behind the building. "
        "Priya replaces the toner of the Zorbit printer every Monday. Lunch is at noon."
    )
    question = "Which floor is the Zorbit printer on, and who replaces its toner?"
    kept = relevant_sentences(passage, question, keep=2)
    assert kept == (
        "The Zorbit printer is on the fourth floor. "
        "Priya replaces the toner of the Zorbit printer every Monday."
    )
    assert relevant_sentences(passage, question, keep=0) == passage  # 0: whole passages
    # sentences sharing nothing with the question are not kept to fill the quota
    assert relevant_sentences(passage, "Where do visitors park their cars?", keep=3) == (
        "Parking is behind the building."
    )
    assert relevant_sentences("One. Two.", question, keep=3) == "One. Two."  # already short
    # no word in common: the first sentences, in order (retrieval judged it relevant)
    assert relevant_sentences(passage, "Qu'en penses-tu ?", keep=2) == (
        "Office notes for the spring. The kitchen was repainted in March."
    )


def test_prompt_sources_are_trimmed_by_the_setting(tmp_path):
    settings = Settings(_env_file=None, model_repository=tmp_path, rag_passage_sentences=1)
    turn = TurnService(settings, triton=None, sessions=None)  # type: ignore[arg-type]
    turn.count_tokens = lambda text: len(text.split())  # type: ignore[method-assign]
    text = "Lunch is at noon. The printer is on the fourth floor. Parking is outside."
    sources = [Source(1, str(uuid.uuid4()), "Office notes", 0.8, text)]
    messages = turn.build_prompt("Where is the printer?", sources, [])
    assert "[1] Office notes: The printer is on the fourth floor." in messages[-1]["content"]
    assert "Lunch" not in messages[-1]["content"]
