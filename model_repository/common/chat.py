"""Chat requests, shared by every LLM runtime: messages, the model's chat template, limits.

The ``llm`` model (ONNX Runtime GenAI) and the gpu profile's ``llm_preprocessing``
(TensorRT-LLM) read requests the same way, so a chat is accepted or refused alike on both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from june_backend import decode_texts, scalar_or


class ChatTemplate:
    """The checkpoint's Jinja chat template, rendered in a sandbox."""

    def __init__(self, folder: Path) -> None:
        path = folder / "chat_template.jinja"
        if not path.is_file():
            raise ValueError(
                "this model has no chat template (chat_template.jinja); use an instruct model"
            )
        source = path.read_text(encoding="utf-8")
        tokenizer_config = folder / "tokenizer_config.json"
        specials = (
            json.loads(tokenizer_config.read_text(encoding="utf-8"))
            if tokenizer_config.is_file()
            else {}
        )
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = self._raise
        env.filters.setdefault("tojson", json.dumps)
        self.template = env.from_string(source)
        self.specials = {
            k: v if isinstance(v, str) else (v or {}).get("content", "")
            for k, v in specials.items()
            if k in ("bos_token", "eos_token")
        }

    @staticmethod
    def _raise(message: str) -> None:
        raise ValueError(message)

    def render(self, messages: list[dict]) -> str:
        try:
            return self.template.render(
                messages=messages, add_generation_prompt=True, **self.specials
            )
        except jinja2.TemplateError as exc:
            raise ValueError(f"chat template failed: {exc}") from exc


def parse_messages(raw: str) -> list[dict]:
    try:
        messages = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"MESSAGES is not JSON: {exc.msg}") from exc
    if not isinstance(messages, list) or not messages:
        raise ValueError("MESSAGES must be a non-empty JSON list")
    for m in messages:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise ValueError("each message needs a string 'role' and 'content'")
    return messages


def check_sampling(max_tokens: int, temperature: float, top_p: float) -> None:
    if max_tokens < 1 or not 0.0 <= temperature <= 2.0 or not 0.0 < top_p <= 1.0:
        raise ValueError("MAX_TOKENS >= 1, 0 <= TEMPERATURE <= 2 and 0 < TOP_P <= 1 are required")


@dataclass
class ChatRequest:
    """The ``llm`` interface's inputs, read from a Triton request (not yet range-checked)."""

    messages: list[dict]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None


def read_chat_request(pb: Any, request: Any) -> ChatRequest:
    """MESSAGES, and the optional MAX_TOKENS (256), TEMPERATURE (0), TOP_P (1), STOP, SEED.

    ``pb`` is ``triton_python_backend_utils``, passed in as ``june_backend`` does.
    """

    def tensor(name: str) -> Any:
        return pb.get_input_tensor_by_name(request, name)

    stop = tensor("STOP")
    seed = tensor("SEED")
    return ChatRequest(
        messages=parse_messages(decode_texts(tensor("MESSAGES").as_numpy())[0]),
        max_tokens=int(scalar_or(tensor("MAX_TOKENS"), 256)),
        temperature=scalar_or(tensor("TEMPERATURE"), 0.0),
        top_p=scalar_or(tensor("TOP_P"), 1.0),
        stop=[s for s in decode_texts(stop.as_numpy()) if s] if stop is not None else [],
        seed=None if seed is None else int(seed.as_numpy().reshape(-1)[0]),
    )
