"""LLM export: greedy tokens from the exported ONNX Runtime GenAI model equal transformers'.

Tiny random-initialised Qwen2 and Qwen3 models (the real architectures; no Qwen weights
are available offline) and the real SmolLM2-135M-Instruct from its GGUF package.
"""

import json
import shutil

import pytest
import torch

from exporters.common import ExportError
from exporters.llm import builder_command, export_llm, resolve_source

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
]
NEW_TOKENS = 24


def ort_greedy(folder, ids: list[int], new_tokens: int) -> list[int]:
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + new_tokens)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    while not generator.is_done():
        generator.generate_next_token()
    return list(generator.get_sequence(0))[len(ids) :]


def hf_greedy(model, ids: list[int], new_tokens: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False, num_beams=1,
            pad_token_id=model.config.eos_token_id,
        )  # fmt: skip
    return out[0, len(ids) :].tolist()


def tiny_model(kind: str, folder, tokenizer_dir, **overrides):
    """A random-initialised model of the real architecture (qwen2, qwen3, qwen3_moe), with
    SmolLM2's tokenizer and chat template."""
    from transformers import (
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
        Qwen3MoeConfig,
        Qwen3MoeForCausalLM,
    )

    common = dict(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, initializer_range=0.2,
    )  # fmt: skip
    config_cls, model_cls = {
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
        "qwen3_moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM),
    }[kind]
    extra = {"head_dim": 16} if kind.startswith("qwen3") else {}
    if kind == "qwen3_moe":
        extra |= {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
    torch.manual_seed(0)
    model = model_cls(config_cls(**{**common, **extra, **overrides})).eval()
    model.save_pretrained(folder)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    ):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, folder / name)
    return model


@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
def test_tiny_qwen_greedy_parity(kind, tmp_path, smollm_hf, cache_dir):
    from tokenizers import Tokenizer

    model = tiny_model(kind, tmp_path / kind, smollm_hf)
    export = export_llm(tmp_path / kind, cache_dir=cache_dir, precision="fp32")
    info = json.loads((export / "export.json").read_text())
    assert info["extra"]["model_type"] == kind
    tokenizer = Tokenizer.from_file(str(smollm_hf / "tokenizer.json"))
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt).ids
        assert ort_greedy(export, ids, NEW_TOKENS) == hf_greedy(model, ids, NEW_TOKENS), prompt


def test_smollm2_greedy_parity(smollm_hf, cache_dir):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    export = export_llm("smollm2-135m-instruct", cache_dir=cache_dir, precision="fp32")
    info = json.loads((export / "export.json").read_text())["extra"]
    assert info["architecture"] == "LlamaForCausalLM" and info["chat_template"] is True
    model = AutoModelForCausalLM.from_pretrained(smollm_hf, dtype=torch.float32).eval()
    tokenizer = Tokenizer.from_file(str(smollm_hf / "tokenizer.json"))
    same = 0
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt).ids
        same += ort_greedy(export, ids, NEW_TOKENS) == hf_greedy(model, ids, NEW_TOKENS)
    assert same == len(PROMPTS)


def test_smollm2_int4_answers_through_its_chat_template(cache_dir):
    from jinja2 import Template
    from tokenizers import Tokenizer

    export = export_llm("smollm2-135m-instruct", cache_dir=cache_dir, precision="int4")
    template = Template((export / "chat_template.jinja").read_text())
    prompt = template.render(
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
    )
    tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    text = tokenizer.decode(ort_greedy(export, ids, 12))
    assert "Paris" in text, text


def test_bad_sources(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        resolve_source(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ExportError, match="neither a GGUF file nor"):
        resolve_source(tmp_path / "x.txt")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ExportError, match="unsupported architecture GPT2LMHeadModel"):
        export_llm(tmp_path / "m", cache_dir=tmp_path / "cache", precision="fp32")
    with pytest.raises(ExportError, match="unknown precision"):
        export_llm(tmp_path / "m", cache_dir=tmp_path / "cache", precision="fp8")


def test_builder_command(tmp_path):
    cmd = builder_command(tmp_path / "hf", tmp_path / "out", "int4", tmp_path / "c")
    assert cmd[1:3] == ["-m", "onnxruntime_genai.models.builder"]
    assert cmd[cmd.index("-p") + 1] == "int4" and cmd[cmd.index("-e") + 1] == "cpu"
