"""The gpu profile's ``llm`` ensemble on a real tritonserver, up to the TensorRT-LLM backend.

The repository is built for the gpu profile as operators build it. Its preprocessing and
postprocessing models are the real ones; ``llm_tensorrt_llm`` keeps its config, but its
backend (TensorRT-LLM, GPU only) is played by tests/trtllm_standin (greedy decoding with
ONNX Runtime GenAI on the same SmolLM2 weights). What this proves: Triton loads the ensemble
as written; the chat template, tokens and limits match the cpu profile; streamed token bytes
join into the text transformers decodes; the orchestrator's client ends the stream with the
right finish reason and counts. What it cannot prove: the real backend's behaviour.
"""

import asyncio
import shutil
from pathlib import Path

import pytest

from exporters.llm import export_llm
from exporters.repository import GPU_MODELS, build_repository
from orchestrator.chat import Sampling
from orchestrator.triton.client import LlmRequestError, TritonGateway
from tests.conftest import make_triton
from tests.integration.test_llm_served import hf_chat_greedy

STANDIN = Path(__file__).parents[1] / "trtllm_standin" / "model.py"
LLM_GPU = tuple(m for m in GPU_MODELS if m.name.startswith("llm"))


@pytest.fixture(scope="module")
def gpu_llm(tmp_path_factory, cache_dir, trtllm_builds):
    root = tmp_path_factory.mktemp("gpu-llm")
    repo = build_repository(
        profile="gpu",
        out=root / "repo",
        cache_dir=cache_dir,
        models=LLM_GPU,
        engines={"llm": trtllm_builds["llm"]},
    )
    trt = repo / "llm_tensorrt_llm"
    config = trt / "config.pbtxt"
    assert 'backend: "tensorrtllm"' in config.read_text()
    config.write_text(config.read_text().replace('backend: "tensorrtllm"', 'backend: "python"'))
    shutil.copy2(STANDIN, trt / "1" / "model.py")
    weights = export_llm("smollm2-135m-instruct", cache_dir=cache_dir, precision="fp32")
    shutil.copytree(weights, trt / "1" / "standin")
    server = make_triton(repo, root / "rt")
    server.start(timeout_s=180)
    yield server
    server.stop()


def chat(server, messages, **options):
    async def run():
        gateway = TritonGateway(server.grpc_url)
        try:
            return [c async for c in gateway.chat_stream(messages, **options)]
        finally:
            await gateway.close()

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("question", "penalty"),
    [
        ("What is the capital of France?", None),
        ("Say hello in Japanese with an emoji.", None),
        ("What is the capital of France?", 1.1),
    ],
)
def test_streams_what_transformers_generates(gpu_llm, smollm_hf, question, penalty):
    """Greedy, as the checkpoint's defaults say; a repetition penalty, when asked, reaches
    TensorRT-LLM through the ensemble (the stand-in applies it as the engine would)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm_hf)
    model = AutoModelForCausalLM.from_pretrained(smollm_hf).eval()
    messages = [{"role": "user", "content": question}]
    chunks = chat(gpu_llm, messages, max_tokens=24, sampling=Sampling(repetition_penalty=penalty))
    reference = hf_chat_greedy(model, smollm_hf, question, 24, penalty or 1.0)
    reference = [t for t in reference if t != 2]

    assert len(chunks) > 2  # streamed, not one block
    text = "".join(c.delta for c in chunks)
    assert text == tokenizer.decode(reference, skip_special_tokens=True)
    assert "\ufffd" not in text
    final = chunks[-1]
    assert final.finish_reason == ("length" if len(reference) >= 24 else "stop")
    assert final.completion_tokens == len(reference)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    assert final.prompt_tokens == len(prompt["input_ids"])


def test_a_short_budget_ends_with_length(gpu_llm):
    chunks = chat(gpu_llm, [{"role": "user", "content": "Count from one to ten."}], max_tokens=3)
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].completion_tokens == 3


def test_bad_requests_are_the_clients_mistake_and_the_model_keeps_serving(gpu_llm):
    with pytest.raises(LlmRequestError, match="TEMPERATURE"):
        chat(
            gpu_llm,
            [{"role": "user", "content": "hi"}],
            max_tokens=5,
            sampling=Sampling(temperature=3.0),
        )
    with pytest.raises(LlmRequestError, match="exceeds the context length"):
        chat(gpu_llm, [{"role": "user", "content": "hi"}], max_tokens=10_000_000)
    assert chat(gpu_llm, [{"role": "user", "content": "hi"}], max_tokens=4)[-1].finish_reason
