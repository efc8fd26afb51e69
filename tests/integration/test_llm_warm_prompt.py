"""The LLM engine's warm system prompt, in process, on the served SmolLM2 export.

ONNX Runtime GenAI's CPU engine keeps one request's state resident, so the warm request
may serve only a chat that has the engine to itself. These are the paths a served model
cannot be steered into from outside: a burst of chats while a request is warm, and a chat
that is cancelled while its system prompt is being pre-filled for it."""

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType

import pytest

from tests.conftest import load_backend_module

SYSTEM = "You are a helpful assistant. Answer in one short sentence of plain English."
QUESTIONS = [
    "What is the capital of France?", "Name a fruit that is yellow.",
    "How many legs does a spider have?", "What colour is the sky?",
    "Say hello in Spanish.", "What is 7 times 6?", "Who wrote Romeo and Juliet?",
    "Write a haiku about snow.",
]  # fmt: skip


@dataclass
class Answer:
    text: str = ""
    ids: list[int] = field(default_factory=list)
    final: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def engine(model_repo) -> Iterator[tuple[ModuleType, ModuleType, object]]:
    llm = load_backend_module("llm", "llm_engine")
    chat = load_backend_module("llm", "chat")
    batcher = llm.ContinuousBatcher(model_repo / "llm" / "1", warm_system_prompt=True)
    yield llm, chat, batcher
    batcher.close()


def ask(engine, question: str, system: str = SYSTEM, cancelled=lambda: False) -> Answer:
    llm, chat, batcher = engine
    ids, shared = batcher.encode_chat(
        [{"role": "system", "content": system}, {"role": "user", "content": question}]
    )
    events: queue.Queue = queue.Queue()
    batcher.submit(
        llm.Job(
            prompt_ids=ids, shared=shared, max_tokens=12,
            sampling=chat.Sampling(temperature=0.0, repetition_penalty=1.0),
            emit=lambda delta, new, final: events.put((delta, new, final)),
            is_cancelled=cancelled,
        )
    )  # fmt: skip
    answer = Answer()
    while True:
        delta, new, final = events.get(timeout=60)
        answer.text += delta
        answer.ids += new
        if final is not None:
            answer.final = final
            return answer


def wait_warm(batcher, at_least: int = 16) -> int:
    """The engine pre-fills while idle: wait (bounded) until it has."""
    deadline = time.monotonic() + 20
    while batcher.warm_tokens < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    return batcher.warm_tokens


def test_a_burst_while_a_request_is_warm_is_answered_in_full(engine):
    _, _, batcher = engine
    alone = {q: ask(engine, q) for q in QUESTIONS}
    warm = wait_warm(batcher)
    assert warm >= 16
    answers = [None] * len(QUESTIONS)

    def run(i: int) -> None:
        answers[i] = ask(engine, QUESTIONS[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for question, answer in zip(QUESTIONS, answers, strict=True):
        assert answer is not None and not answer.final.get("error"), (question, answer)
        assert answer.final["finish_reason"] in ("stop", "length"), answer.final
        # batched arithmetic may drift late; the opening is each question's own
        assert answer.ids[:3] == alone[question].ids[:3], (question, answer.text)
    # at most one chat had the engine to itself, and only that one used the warm request
    assert sum(a.final["cached_tokens"] > 0 for a in answers) <= 1
    # idle again: the system prompt is pre-filled again, and the next chat starts on it
    assert wait_warm(batcher) == warm
    again = ask(engine, QUESTIONS[0])
    assert again.final["cached_tokens"] == warm and again.ids == alone[QUESTIONS[0]].ids


def test_a_chat_cancelled_while_its_system_prompt_prefills(engine):
    """A new system prompt, with nothing warm for it: the chat waits while its prompt is
    pre-filled, and leaves. It is told so, and the pre-filled request serves the next."""
    _, _, batcher = engine
    system = "You are a patient librarian. Answer in one short sentence."
    left = ask(engine, "Where are the maps?", system=system, cancelled=lambda: True)
    assert left.final["finish_reason"] == "cancelled" and left.ids == []
    warm = wait_warm(batcher)
    assert warm >= 16
    answer = ask(engine, "Where are the maps?", system=system)
    assert answer.final["finish_reason"] in ("stop", "length") and answer.text.strip()
    assert answer.final["cached_tokens"] == warm
