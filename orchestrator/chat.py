"""Fitting a conversation into the LLM's prompt budget.

The system prompt is never cut. The newest user message must fit with it, or the request
is rejected (400). History is then added from the newest turn back, and the oldest turns
fall off first. Tokens are counted with the served model's own tokenizer when the model
repository is local; otherwise a conservative 3-characters-per-token estimate is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators of a chat template


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
