"""The spec's model shapes on tiny random-initialised checkpoints of the real architectures:
Qwen3-MoE (refused on CPU with the runtime to use; carried to TensorRT-LLM on GPU up to the
missing tool), and YaRN long context (a prompt past the native context is refused cleanly
without scaling, and served with it, token for token as transformers decodes it)."""

import json
import shutil

import pytest
import torch

from benchmarks.llm_client import stream_chat
from exporters.common import ExportError
from exporters.llm import (
    apply_rope_scaling,
    architecture_of,
    export_llm,
    parse_rope_scaling,
    write_serving_files,
)
from exporters.trtllm import TRTLLM_LLM_CLASSES, LlmEngineSpec, build_llm_engines
from tests.integration.test_cli import error_lines, run
from tests.integration.test_llm_export import tiny_model
from tests.integration.test_llm_served import hf_chat_greedy, serve_llm

NATIVE = 2048  # the tiny Qwen3's native context; YaRN needs head_dim 64 to be defined here


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory, smollm_hf):
    folder = tmp_path_factory.mktemp("moe") / "qwen3-moe"
    tiny_model("qwen3_moe", folder, smollm_hf)
    return folder


def test_moe_is_refused_on_cpu_with_the_runtime_to_use(tiny_moe, tmp_path):
    assert json.loads((tiny_moe / "config.json").read_text())["architectures"] == [
        "Qwen3MoeForCausalLM"
    ]
    with pytest.raises(ExportError, match=r"mixture of experts.*--target gpu"):
        export_llm(tiny_moe, cache_dir=tmp_path / "cache", precision="fp32")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    proc = run(
        "export", "llm", "--source", str(tiny_moe), "--precision", "fp32", "--allow-unlisted"
    )
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "TensorRT-LLM" in lines[0], lines


def test_moe_goes_to_tensorrt_llm_on_gpu(tiny_moe, tmp_path):
    assert architecture_of(tiny_moe, "gpu") == "Qwen3MoeForCausalLM"
    assert TRTLLM_LLM_CLASSES["Qwen3MoeForCausalLM"] == "QWenForCausalLM"
    served = write_serving_files(tiny_moe, tmp_path / "serving")
    meta = json.loads((served / "llm.json").read_text())
    assert meta["architecture"] == "Qwen3MoeForCausalLM" and meta["context_length"] == 512
    if shutil.which("trtllm-build") is None:
        with pytest.raises(ExportError, match="tensorrt_llm is not installed"):
            build_llm_engines(tiny_moe, tmp_path / "out", "Qwen3MoeForCausalLM", LlmEngineSpec())


def test_rope_scaling_option_is_checked(tmp_path, smollm_hf):
    assert parse_rope_scaling(None) is None and parse_rope_scaling("none") is None
    assert parse_rope_scaling("yarn:4") == {"rope_type": "yarn", "factor": 4.0}
    for bad in ("yarn", "yarn:1", "linear:2", "yarn:x"):
        with pytest.raises(ExportError, match="yarn:FACTOR"):
            parse_rope_scaling(bad)
    folder = tiny_model("qwen3", tmp_path / "q", smollm_hf, max_position_embeddings=NATIVE)
    scaled = apply_rope_scaling(tmp_path / "q", tmp_path / "s", parse_rope_scaling("yarn:4"))
    config = json.loads((scaled / "config.json").read_text())
    assert config["max_position_embeddings"] == 4 * NATIVE
    assert config["rope_scaling"]["original_max_position_embeddings"] == NATIVE
    assert (scaled / "model.safetensors").resolve() == (tmp_path / "q/model.safetensors").resolve()
    assert folder is not None
    with pytest.raises(ExportError, match="already names rope scaling"):
        apply_rope_scaling(scaled, tmp_path / "again", parse_rope_scaling("yarn:2"))


def test_a_prompt_past_the_native_context_needs_yarn(tmp_path, cache_dir, smollm_hf):
    from tokenizers import Tokenizer
    from transformers import Qwen3ForCausalLM

    source = tmp_path / "qwen3-long"
    tiny_model("qwen3", source, smollm_hf, head_dim=64, max_position_embeddings=NATIVE)
    # A varied prompt past the native context: where the tokens sit beyond it, YaRN's
    # rotation decides the reply (a repetitive one hides a wrong rotation).
    tokenizer = Tokenizer.from_file(str(smollm_hf / "tokenizer.json"))
    long_question = tokenizer.decode([100 + (i * 7919) % 40000 for i in range(2300)])
    messages = [{"role": "user", "content": long_question}]

    plain = serve_llm(tmp_path / "plain", cache_dir, source, "fp32")
    try:
        refused = stream_chat(plain.grpc_url, messages, max_tokens=8)
        after = stream_chat(plain.grpc_url, [{"role": "user", "content": "Hi"}], max_tokens=4)
    finally:
        plain.stop()
    assert f"exceeds the context length ({NATIVE})" in refused.error
    assert not after.error  # refused cleanly: the model keeps serving

    export = export_llm(source, cache_dir=cache_dir, precision="fp32", rope_scaling="yarn:2")
    info = json.loads((export / "export.json").read_text())["extra"]
    assert info["context_length"] == 2 * NATIVE and info["rotary_caches_from_transformers"]
    (tmp_path / "scaled").mkdir()
    server = serve_llm(tmp_path / "scaled", cache_dir, source, "fp32", rope_scaling="yarn:2")
    try:
        served = stream_chat(server.grpc_url, messages, max_tokens=12)
    finally:
        server.stop()
    assert not served.error, served.error
    assert served.prompt_tokens > NATIVE

    # transformers' own YaRN, on the same scaled config the exporter made
    scaled = apply_rope_scaling(source, tmp_path / "reference", parse_rope_scaling("yarn:2"))
    reference_model = Qwen3ForCausalLM.from_pretrained(scaled).eval()
    assert reference_model.config.rope_parameters["rope_type"] == "yarn"
    with torch.no_grad():
        reference = hf_chat_greedy(reference_model, smollm_hf, long_question, 12)
    assert [t for t in served.token_ids if t != 2] == [t for t in reference if t != 2]
