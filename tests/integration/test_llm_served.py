"""The decoupled ``llm`` model on a real tritonserver: parity, streaming, concurrency, cancel."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from benchmarks.llm_client import stream_chat
from exporters.repository import MODELS, build_repository
from tests.conftest import make_triton
from tests.integration.test_llm_export import tiny_model

LLM_ONLY = tuple(m for m in MODELS if m.name == "llm")
QUESTIONS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three fruits.",
]


def serve_llm(tmp_path, cache_dir, source, precision):
    repo = build_repository(
        profile="cpu", out=tmp_path / "repo", cache_dir=cache_dir, models=LLM_ONLY,
        sources={"llm": str(source)}, options={"llm": {"precision": precision}},
    )  # fmt: skip
    server = make_triton(repo, tmp_path / "rt")
    server.start(timeout_s=120)
    return server


def hf_chat_greedy(model, tokenizer_dir, question: str, max_new_tokens: int) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=2
        )
    return out[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "smollm2"])
def test_greedy_through_triton_equals_transformers(kind, tmp_path, cache_dir, smollm_hf):
    from transformers import AutoModelForCausalLM

    if kind == "smollm2":
        source, model = (
            "smollm2-135m-instruct",
            AutoModelForCausalLM.from_pretrained(smollm_hf).eval(),
        )
    else:
        source, model = tmp_path / kind, tiny_model(kind, tmp_path / kind, smollm_hf)
    server = serve_llm(tmp_path, cache_dir, source, "fp32")
    try:
        for question in QUESTIONS:
            served = stream_chat(
                server.grpc_url, [{"role": "user", "content": question}], max_tokens=20
            )
            assert not served.error, served.error
            reference = [t for t in hf_chat_greedy(model, smollm_hf, question, 20) if t != 2]
            assert [t for t in served.token_ids if t != 2] == reference, (question, served.text)
            assert served.completion_tokens == len(served.token_ids)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory, cache_dir):
    server = serve_llm(tmp_path_factory.mktemp("llm"), cache_dir, "smollm2-135m-instruct", "int4")
    yield server
    server.stop()


def test_streaming_is_real(llm_server):
    """The first delta arrives well before the last: tokens are sent as they are made."""
    out = stream_chat(
        llm_server.grpc_url, [{"role": "user", "content": "Tell me about Paris."}], max_tokens=64
    )
    assert out.finish_reason in ("length", "stop")
    assert len(out.deltas) >= 50
    assert out.arrivals == sorted(out.arrivals)
    assert out.arrivals[0] < out.arrivals[-1] / 2  # the first delta long before the last
    assert len({round(t, 2) for t in out.arrivals}) > 25  # spread over time, not one burst
    assert out.completion_tokens >= len(out.deltas) - 1
    assert out.prompt_tokens > 10


def test_stop_strings_and_limits(llm_server):
    out = stream_chat(
        llm_server.grpc_url,
        [{"role": "user", "content": QUESTIONS[0]}],
        max_tokens=40,
        stop=["Paris"],
    )
    assert out.finish_reason == "stop"
    assert "Paris" not in out.text
    out = stream_chat(
        llm_server.grpc_url, [{"role": "user", "content": QUESTIONS[1]}], max_tokens=5
    )
    assert out.finish_reason == "length" and out.completion_tokens == 5


def test_bad_requests_get_errors_and_the_model_keeps_serving(llm_server):
    for messages in ([], [{"role": "user"}], [{"content": "no role"}]):
        assert stream_chat(llm_server.grpc_url, messages).error
    assert (
        "the context length"
        in stream_chat(
            llm_server.grpc_url, [{"role": "user", "content": "hi"}], max_tokens=100_000
        ).error
    )
    ok = stream_chat(llm_server.grpc_url, [{"role": "user", "content": "hi"}], max_tokens=4)
    assert ok.finish_reason == "length" and not ok.error


def test_eight_concurrent_chats_finish_correctly(llm_server):
    """Eight chats at once (the engine batches them): each finishes, with its own answer.

    Batched int4 arithmetic is not bit-identical to a batch of one, so long greedy
    continuations may drift; the opening tokens must match each chat's solo answer, and the
    solo openings all differ, so any cross-talk between chats would show.
    """
    questions = [
        "What is the capital of France?", "Name a fruit that is yellow.", "How many legs does a spider have?",
        "Write a haiku about snow.", "What colour is the sky?", "Say hello in Spanish.",
        "What is 7 times 6?", "Who wrote Romeo and Juliet?",
    ]  # fmt: skip

    def ask(question: str):
        return stream_chat(
            llm_server.grpc_url, [{"role": "user", "content": question}], max_tokens=16
        )

    alone = [ask(q) for q in questions]
    openings = [tuple(a.token_ids[:4]) for a in alone]
    assert len(set(openings)) == len(questions)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, questions))
    for question, mine, solo in zip(questions, together, alone, strict=True):
        assert not mine.error and mine.finish_reason in ("length", "stop"), question
        assert tuple(mine.token_ids[:4]) == tuple(solo.token_ids[:4]), (
            question,
            mine.text,
            solo.text,
        )


def test_cancelling_frees_the_slot(llm_server):
    """Fill every slot with long chats, cancel them, and a new chat still runs promptly."""
    long_chat = [
        {"role": "user", "content": "Write a very long essay about the history of Europe."}
    ]
    with ThreadPoolExecutor(4) as pool:
        cancelled = list(
            pool.map(
                lambda _: stream_chat(
                    llm_server.grpc_url, long_chat, max_tokens=3000, cancel_after_deltas=2
                ),
                range(4),
            )
        )
    assert all(c.finish_reason == "client-cancelled" for c in cancelled)
    start = time.perf_counter()
    after = stream_chat(
        llm_server.grpc_url, [{"role": "user", "content": "hi"}], max_tokens=8, timeout_s=60
    )
    assert after.finish_reason == "length" and not after.error
    # Had the four 3000-token chats kept their slots, this would wait minutes, not seconds.
    assert time.perf_counter() - start < 30
