"""Fitting a conversation into the LLM's prompt budget.

The system prompt is never cut. The newest user message must fit with it, or the request
is rejected (400). History is then added from the newest turn back, and the oldest turns
fall off first. Tokens are counted with the served model's own tokenizer when the model
repository is local; otherwise a conservative 3-characters-per-token estimate is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators of a chat template

# Every turn's system prompt. The CPU LLM keeps the last system prompt it saw pre-filled
# while idle, so whatever else asks the LLM on a turn's behalf (the health probe) opens with
# this one too.
SYSTEM_PROMPT = (
    "You are June, a helpful voice assistant. Answer in one to three short sentences of "
    "plain spoken English. When the numbered sources given with a question answer it, "
    "answer from them. Otherwise answer from the conversation, or say that you do not know."
)


@dataclass(frozen=True)
class Sampling:
    """A request's sampling. A field left ``None`` takes the served model's default, which
    its checkpoint names (``generation_config.json``)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None


class PromptTooLong(ValueError):
    """The newest message alone does not fit the prompt budget."""


@lru_cache(maxsize=4)
def token_counter(tokenizer_file: Path | None) -> Callable[[str], int]:
    if tokenizer_file is not None and tokenizer_file.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)
    log.info("no local LLM tokenizer; estimating 3 characters per token")
    return lambda text: len(text) // 3 + 1


def fit_messages(
    messages: list[dict[str, str]], *, budget: int, count: Callable[[str], int]
) -> tuple[list[dict[str, str]], int]:
    """``(messages that fit, number of history messages dropped)``."""
    system = [m for m in messages if m["role"] == "system"]
    rest = [m for m in messages if m["role"] != "system"]
    if not rest:
        raise PromptTooLong("the conversation needs at least one non-system message")

    def cost(m: dict[str, str]) -> int:
        return count(m["content"]) + MESSAGE_OVERHEAD_TOKENS

    used = sum(cost(m) for m in system) + cost(rest[-1])
    if used > budget:
        raise PromptTooLong(
            f"the new message and system prompt need about {used} tokens; the prompt budget is {budget}"
        )
    kept = [rest[-1]]
    for message in reversed(rest[:-1]):
        if used + cost(message) > budget:
            break
        used += cost(message)
        kept.insert(0, message)
    return system + kept, len(rest) - len(kept)


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
UNFINISHED_THOUGHT = (
    "Sorry, I needed more time to think that through than I had. Could you ask it more simply?"
)


class ReasoningSplitter:
    """Keeps a thinking model's reasoning apart from its reply, as the text streams in.

    A reply that opens with ``<think>`` (Qwen3 with ``enable_thinking``), or a model whose
    prompt already opened it (``inside``: Qwen3 Thinking-2507 only ever closes it), reasons
    until ``</think>``; only what follows is the reply. Text that could still be the start
    of a tag is held back, so a tag split across tokens never leaks. :meth:`finish` says
    whether the reasoning was left unfinished (the token budget ran out inside it).
    """

    def __init__(self, *, inside: bool = False) -> None:
        self._state = "reasoning" if inside else "start"
        self._held = ""

    def push(self, text: str) -> tuple[str, str]:
        """``(reasoning, reply)`` that can be released now."""
        self._held += text
        reasoning = reply = ""
        if self._state == "start":
            head = self._held.lstrip()
            if head.startswith(THINK_OPEN):
                self._state, self._held = "reasoning", head[len(THINK_OPEN) :]
            elif THINK_OPEN.startswith(head):
                return "", ""  # it may yet be "<think>"
            else:
                self._state = "reply"
        if self._state == "reasoning":
            at = self._held.find(THINK_CLOSE)
            if at == -1:
                keep = _partial_suffix(self._held, THINK_CLOSE)
                cut = len(self._held) - keep
                reasoning, self._held = self._held[:cut], self._held[cut:]
                return reasoning, ""
            reasoning = self._held[:at]
            self._state, self._held = "after", self._held[at + len(THINK_CLOSE) :]
        if self._state == "after":
            self._held = self._held.lstrip()
            if not self._held:
                return reasoning, ""
            self._state = "reply"
        reply, self._held = self._held, ""
        return reasoning, reply

    def finish(self) -> tuple[str, str, bool]:
        """``(reasoning, reply, unfinished)`` for what is still held at the end."""
        held, self._held = self._held, ""
        if self._state == "reasoning":
            return held, "", True
        return "", held, False


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
