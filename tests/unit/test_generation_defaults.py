"""Sampling defaults come from the checkpoint, and requests override them one by one; the
chat template's thinking mode is read from the template itself."""

import json

import pytest

from exporters.llm import generation_defaults, thinking_mode, write_generation
from tests.chat_templates import QWEN3_HYBRID, QWEN3_THINKING_2507
from tests.conftest import load_backend_module

chat = load_backend_module("llm", "chat")

PLAIN = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_thinking_mode_is_read_from_the_template():
    assert thinking_mode(QWEN3_THINKING_2507) == "always"
    assert thinking_mode(QWEN3_HYBRID) == "optional"
    assert thinking_mode(PLAIN) == "none"
    assert thinking_mode(None) == "none"


def test_enable_thinking_reaches_the_template_only_when_asked(tmp_path):
    (tmp_path / "chat_template.jinja").write_text(QWEN3_HYBRID)
    template = chat.ChatTemplate(tmp_path)
    messages = [{"role": "user", "content": "Hi"}]
    assert template.render(messages).endswith("assistant\n")  # the template's default
    assert template.render(messages, enable_thinking=False).endswith("<think>\n\n</think>\n\n")
    assert template.render(messages, enable_thinking=True).endswith("assistant\n")


def write_config(folder, **values):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "generation_config.json").write_text(json.dumps(values))
    return folder


def test_qwen_style_generation_config_becomes_the_default(tmp_path):
    hf = write_config(
        tmp_path / "qwen", do_sample=True, temperature=0.7, top_p=0.8, top_k=20,
        repetition_penalty=1.05, eos_token_id=[151645, 151643],
    )  # fmt: skip
    assert generation_defaults(hf) == {
        "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
        "from": "checkpoint",
    }  # fmt: skip


def test_greedy_unless_do_sample_as_hugging_face_reads_it(tmp_path):
    hf = write_config(tmp_path / "g", temperature=0.7, repetition_penalty=1.2)
    defaults = generation_defaults(hf, {"repetition_penalty": 1.1})
    assert defaults["temperature"] == 0.0 and defaults["repetition_penalty"] == 1.2
    assert defaults["from"] == "checkpoint"  # the checkpoint named some: no fallback


def test_a_checkpoint_naming_no_sampling_gets_the_fallback(tmp_path):
    hf = write_config(tmp_path / "gguf", bos_token_id=1, eos_token_id=2)
    assert generation_defaults(hf) == {
        "temperature": 0.0, "top_p": 1.0, "top_k": 50, "repetition_penalty": 1.0,
        "from": "checkpoint",
    }  # fmt: skip
    defaults = generation_defaults(hf, {"repetition_penalty": 1.1})
    assert defaults["repetition_penalty"] == 1.1 and defaults["temperature"] == 0.0
    assert defaults["from"] == "june"


def request(**given):
    fields = dict(
        messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=None,
        top_p=None, top_k=None, repetition_penalty=None, stop=[], seed=None,
        enable_thinking=None,
    )  # fmt: skip
    return chat.ChatRequest(**{**fields, **given})


def test_the_served_model_fills_what_a_request_leaves_out(tmp_path):
    hf = write_config(tmp_path / "hf", do_sample=True, temperature=0.6, top_p=0.95, top_k=20)
    write_generation(hf, tmp_path)
    defaults = chat.Sampling.load(tmp_path)
    assert defaults == chat.Sampling(temperature=0.6, top_p=0.95, top_k=20)
    assert request().sampling(defaults) == defaults
    assert request(temperature=0.0).sampling(defaults).temperature == 0.0  # greedy asked
    assert request(top_k=0, repetition_penalty=1.3).sampling(defaults) == chat.Sampling(
        temperature=0.6, top_p=0.95, top_k=0, repetition_penalty=1.3
    )
    assert chat.Sampling.load(tmp_path / "none") == chat.Sampling()  # no file: greedy


@pytest.mark.parametrize(
    "given",
    [{"temperature": 2.5}, {"top_p": 0.0}, {"top_k": -1}, {"repetition_penalty": 0.0},
     {"max_tokens": 0}],
)  # fmt: skip
def test_out_of_range_sampling_is_refused(given):
    with pytest.raises(ValueError):
        request(**given).sampling(chat.Sampling())
