"""Chat requests, shared by every LLM runtime: messages, the model's chat template, limits,
and the sampling defaults the checkpoint ships.

The ``llm`` model (ONNX Runtime GenAI) and the gpu profile's ``llm_preprocessing``
(TensorRT-LLM) read requests the same way, so a chat is accepted or refused alike on both,
and a parameter the client leaves out takes the same default on both: the checkpoint's own
(``generation.json``, written by the exporter from its ``generation_config.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
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

    def render(self, messages: list[dict], *, enable_thinking: bool | None = None) -> str:
        """The prompt. ``enable_thinking`` reaches templates that read it (Qwen3's); left
        ``None``, the template's own default holds."""
        extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
        try:
            return self.template.render(
                messages=messages, add_generation_prompt=True, **self.specials, **extra
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


GENERATION_FILE = "generation.json"


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen. ``temperature`` 0 is greedy; ``top_k`` 0 is no top-k cut. The
    field defaults are Hugging Face's, for a checkpoint that names none."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0

    @classmethod
    def load(cls, folder: Path) -> Sampling:
        """The served model's defaults (``generation.json``), or greedy without one."""
        path = folder / GENERATION_FILE
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            **{
                f.name: type(getattr(cls(), f.name))(data[f.name])
                for f in fields(cls)
                if f.name in data
            }
        )

    def check(self) -> Sampling:
        if not 0.0 <= self.temperature <= 2.0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("0 <= TEMPERATURE <= 2 and 0 < TOP_P <= 1 are required")
        if self.top_k < 0 or not 0.0 < self.repetition_penalty <= 2.0:
            raise ValueError("TOP_K >= 0 and 0 < REPETITION_PENALTY <= 2 are required")
        return self


def check_sampling(max_tokens: int, sampling: Sampling) -> Sampling:
    if max_tokens < 1:
        raise ValueError("MAX_TOKENS >= 1 is required")
    return sampling.check()


@dataclass
class ChatRequest:
    """The ``llm`` interface's inputs, read from a Triton request (not yet range-checked).
    A sampling input left out is ``None``: the model's default applies (:meth:`sampling`)."""

    messages: list[dict]
    max_tokens: int
    temperature: float | None
    top_p: float | None
    top_k: int | None
    repetition_penalty: float | None
    stop: list[str]
    seed: int | None
    enable_thinking: bool | None

    def sampling(self, defaults: Sampling) -> Sampling:
        """The request's sampling, each input it left out taken from ``defaults``; checked."""
        given = {
            name: value
            for name in ("temperature", "top_p", "top_k", "repetition_penalty")
            if (value := getattr(self, name)) is not None
        }
        return check_sampling(self.max_tokens, replace(defaults, **given))


def read_chat_request(pb: Any, request: Any) -> ChatRequest:
    """MESSAGES, and the optional MAX_TOKENS (256), TEMPERATURE, TOP_P, TOP_K,
    REPETITION_PENALTY, STOP, SEED and ENABLE_THINKING.

    ``pb`` is ``triton_python_backend_utils``, passed in as ``june_backend`` does.
    """

    def tensor(name: str) -> Any:
        return pb.get_input_tensor_by_name(request, name)

    def optional(name: str) -> float | None:
        value = tensor(name)
        return None if value is None else scalar_or(value, 0.0)

    stop = tensor("STOP")
    seed = tensor("SEED")
    top_k = optional("TOP_K")
    thinking = tensor("ENABLE_THINKING")
    return ChatRequest(
        messages=parse_messages(decode_texts(tensor("MESSAGES").as_numpy())[0]),
        max_tokens=int(scalar_or(tensor("MAX_TOKENS"), 256)),
        temperature=optional("TEMPERATURE"),
        top_p=optional("TOP_P"),
        top_k=None if top_k is None else int(top_k),
        repetition_penalty=optional("REPETITION_PENALTY"),
        stop=[s for s in decode_texts(stop.as_numpy()) if s] if stop is not None else [],
        seed=None if seed is None else int(seed.as_numpy().reshape(-1)[0]),
        enable_thinking=None if thinking is None else bool(thinking.as_numpy().reshape(-1)[0]),
    )
