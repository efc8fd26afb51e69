"""The decoupled ``llm`` model on a real tritonserver: parity, streaming, concurrency, cancel."""

import asyncio
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from benchmarks.llm_client import stream_chat
from exporters.repository import MODELS, build_repository
from orchestrator.chat import UNFINISHED_THOUGHT
from orchestrator.triton.client import TritonGateway
from tests.chat_templates import QWEN3_HYBRID, QWEN3_THINKING_2507
from tests.conftest import make_triton
from tests.integration.test_llm_export import tiny_model

LLM_ONLY = tuple(m for m in MODELS if m.name == "llm")
QUESTIONS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three fruits.",
]


def serve_llm(tmp_path, cache_dir, source, precision, **options):
    repo = build_repository(
        profile="cpu", out=tmp_path / "repo", cache_dir=cache_dir, models=LLM_ONLY,
        sources={"llm": str(source)}, options={"llm": {"precision": precision, **options}},
    )  # fmt: skip
    server = make_triton(repo, tmp_path / "rt")
    server.start(timeout_s=120)
    return server


def hf_chat_greedy(
    model, tokenizer_dir, question: str, max_new_tokens: int, repetition_penalty: float = 1.0
) -> list[int]:
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
            ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=2,
            repetition_penalty=repetition_penalty,
        )  # fmt: skip
    return out[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "smollm2"])
def test_greedy_through_triton_equals_transformers(kind, tmp_path, cache_dir, smollm_hf):
    """Each with the sampling its export serves by default: the tiny checkpoints name none
    (plain greedy); SmolLM2's GGUF names none either, and June gives it greedy with a 1.15
    repetition penalty, which transformers applies the same way."""
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
        cached = []
        for question in QUESTIONS:
            served = stream_chat(
                server.grpc_url, [{"role": "user", "content": question}], max_tokens=20
            )
            assert not served.error, served.error
            penalty = 1.15 if kind == "smollm2" else 1.0
            reference = hf_chat_greedy(model, smollm_hf, question, 20, penalty)
            reference = [t for t in reference if t != 2]
            assert [t for t in served.token_ids if t != 2] == reference, (question, served.text)
            assert served.completion_tokens == len(served.token_ids)
            cached.append(served.cached_tokens)
        if kind == "smollm2":
            # SmolLM2's template writes its own system prompt: after the first chat the
            # later ones start from it pre-filled, and still equal transformers.
            assert cached[0] == 0 and any(cached[1:]), cached
        else:
            # A random model does not continue its template's system prompt as written, so
            # no warm request can hold it exactly: none is used.
            assert cached == [0, 0, 0], cached
    finally:
        server.stop()


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory, cache_dir):
    server = serve_llm(tmp_path_factory.mktemp("llm"), cache_dir, "smollm2-135m-instruct", "int4")
    yield server
    server.stop()


def test_streaming_is_real(llm_server):
    """The first delta arrives well before the last: tokens are sent as they are made."""
    # The model's first request after loading pays ONNX Runtime's warm-up, which is not
    # what this test measures.
    stream_chat(llm_server.grpc_url, [{"role": "user", "content": "Hi"}], max_tokens=2)
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
        return stream_chat(  # plain greedy: these questions' openings differ under it
            llm_server.grpc_url, [{"role": "user", "content": question}], max_tokens=16,
            temperature=0.0, repetition_penalty=1.0,
        )  # fmt: skip

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


def test_the_system_prompt_is_prefilled_while_idle(llm_server):
    """A chat that opens with the system prompt of the chat before it finds that prompt
    already pre-filled (the engine fills warm requests while idle): it pre-fills only the
    rest. A chat that finds none pre-fills its system prompt in a turn of its own, so the
    greedy answer is the same token for token either way. Another system prompt becomes
    the one kept warm."""

    def ask(system: str, question: str):
        return stream_chat(
            llm_server.grpc_url,
            [{"role": "system", "content": system}, {"role": "user", "content": question}],
            max_tokens=12, temperature=0.0, repetition_penalty=1.0,
        )  # fmt: skip

    tea = "You are a tea sommelier. Answer every question in one short sentence about tea."
    maps = "You are a cartographer. Answer every question in one short sentence about maps."
    for system, question in ((tea, "What should I drink?"), (maps, "Where am I?")):
        cold = ask(system, question)  # a system prompt this server has not seen
        warm = ask(system, question)
        for served in (cold, warm):
            assert not served.error and served.finish_reason in ("stop", "length"), served
        assert cold.cached_tokens == 0, cold.cached_tokens
        assert 16 <= warm.cached_tokens < warm.prompt_tokens == cold.prompt_tokens, warm
        assert warm.token_ids == cold.token_ids, (cold.text, warm.text)


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


def repeated_ngrams(text: str, n: int = 4) -> int:
    words = re.findall(r"[\w']+", text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) - len(set(grams))


def test_the_readme_chat_examples_do_not_loop(llm_server):
    """The README's /v1/chat questions, with the defaults the export serves. Plain greedy,
    asked for explicitly, loops on the first ("Paris, capital of the French language,
    culture, and culture"): the default is what mends it."""
    url = llm_server.grpc_url
    capital = [{"role": "user", "content": "What is the capital of France?"}]
    answer = stream_chat(url, capital, max_tokens=32)
    assert "Paris" in answer.text and repeated_ngrams(answer.text, 3) == 0, answer.text
    story = stream_chat(url, [{"role": "user", "content": "Tell me a story."}], max_tokens=256)
    assert story.completion_tokens > 40 and repeated_ngrams(story.text) == 0, story.text
    plain = stream_chat(url, capital, max_tokens=32, temperature=0.0, repetition_penalty=1.0)
    assert repeated_ngrams(plain.text, 3) > 0, plain.text


def thinking_model(folder, smollm_hf, template: str):
    """A tiny random Qwen3 whose chat template is a thinking model's."""
    tiny_model("qwen3", folder, smollm_hf)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").write_text(template)
    return folder


def gateway_chat(server, messages, **options):
    async def run():
        gateway = TritonGateway(server.grpc_url)
        try:
            mode = await gateway.thinking_mode()
            return mode, [c async for c in gateway.chat_stream(messages, **options)]
        finally:
            await gateway.close()

    return asyncio.run(run())


def gateway_budgets(server, *asks: tuple[int, int]) -> list[int]:
    async def run():
        gateway = TritonGateway(server.grpc_url)
        try:
            return [await gateway.prompt_budget(cap, reply) for cap, reply in asks]
        finally:
            await gateway.close()

    return asyncio.run(run())


def test_a_thinking_models_reasoning_never_becomes_the_reply(tmp_path, cache_dir, smollm_hf):
    """Qwen3 Thinking-2507's template opens <think> in the prompt; the reply only closes it.
    A random model never closes it within its budget: all of it is reasoning, and the
    reply is the fallback, never the thinking."""
    folder = thinking_model(tmp_path / "thinker", smollm_hf, QWEN3_THINKING_2507)
    server = serve_llm(tmp_path, cache_dir, folder, "fp32")
    try:
        question = [{"role": "user", "content": "What is the capital of France?"}]
        mode, chunks = gateway_chat(server, question, max_tokens=12)
        raw = stream_chat(server.grpc_url, question, max_tokens=12)
    finally:
        server.stop()
    assert mode == "always"
    reply = "".join(c.delta for c in chunks)
    reasoning = "".join(c.reasoning for c in chunks)
    assert reply == UNFINISHED_THOUGHT
    assert chunks[-1].finish_reason == "length"
    assert reasoning == raw.text  # every generated character went to the reasoning
    assert raw.text and raw.text not in reply


def test_enable_thinking_reaches_the_served_template(tmp_path, cache_dir, smollm_hf):
    """Qwen3's hybrid template closes an empty <think> block when thinking is off: the
    prompt is longer by it, and the model is known to think optionally."""
    folder = thinking_model(tmp_path / "hybrid", smollm_hf, QWEN3_HYBRID)
    server = serve_llm(tmp_path, cache_dir, folder, "fp32")
    try:
        question = [{"role": "user", "content": "Hi"}]
        on = stream_chat(server.grpc_url, question, max_tokens=2, enable_thinking=True)
        off = stream_chat(server.grpc_url, question, max_tokens=2, enable_thinking=False)
        default = stream_chat(server.grpc_url, question, max_tokens=2)
        mode, _ = gateway_chat(server, question, max_tokens=1)
        budgets = gateway_budgets(server, (1536, 96), (300, 96))
    finally:
        server.stop()
    assert not on.error and not off.error
    assert off.prompt_tokens > on.prompt_tokens == default.prompt_tokens
    assert mode == "optional"
    # the prompt budget follows the served context (512 tokens): never more than it leaves
    assert budgets == [512 - 96, 300]


def thread_nices(pid: int) -> dict[str, int]:
    """Each thread of ``pid`` (id and name) with its nice value, from /proc."""
    from pathlib import Path

    nices = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        text = stat.read_text()
        name = text[text.index("(") + 1 : text.rindex(")")]
        nices[f"{stat.parent.name} {name}"] = int(text.rsplit(")", 1)[1].split()[16])
    return nices


def stub_of(model: str) -> int:
    """The pid of the Python-backend stub serving ``model`` (its model.py path)."""
    from pathlib import Path

    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = proc.read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and argv[0].endswith(b"triton_python_backend_stub")
            and any(f"/{model}/1/model.py".encode() in a for a in argv)
        ):
            return int(proc.parent.name)
    raise AssertionError(f"no python stub for {model}")


def test_the_llm_yields_the_cpu_to_speech(triton):
    """The served LLM runs at nice 10 (llm_nice), every engine thread included, so on a
    busy CPU speech recognition and synthesis, at nice 0, go first."""
    llm = thread_nices(stub_of("llm"))
    assert set(llm.values()) == {10}, llm
    assert set(thread_nices(stub_of("tts_piper_vits")).values()) == {0}
    assert set(thread_nices(stub_of("asr_whisper")).values()) == {0}
