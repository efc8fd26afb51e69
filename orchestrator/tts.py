"""Reply text -> speech, sentence by sentence, so the first sentence plays early.

The reply is split into sentences (long ones at commas), each is synthesised by Triton's
TTS model, and the next sentence is already being synthesised while the current one is
encoded and sent.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from orchestrator.triton.client import Speech, TritonGateway

_SENTENCE_END = re.compile(r"([.!?…][\"')\]]*)\s+|\n+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


def split_sentences(text: str, *, max_chars: int = 200) -> list[str]:
    """Sentences of ``text``; one longer than ``max_chars`` is cut at clause boundaries."""
    parts = _SENTENCE_END.split(text)  # text, end punctuation (or None), text, ...
    sentences = [
        (parts[i] + ((parts[i + 1] or "") if i + 1 < len(parts) else "")).strip()
        for i in range(0, len(parts), 2)
    ]
    pieces: list[str] = []
    for sentence in sentences:
        if not sentence:
            continue
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        current = ""
        for clause in _CLAUSE_END.split(sentence):
            if current and len(current) + 1 + len(clause) > max_chars:
                pieces.append(current)
                current = clause
            else:
                current = f"{current} {clause}".strip()
        pieces.extend(_cut_words(current, max_chars))
    return pieces


def _cut_words(text: str, max_chars: int) -> list[str]:
    """Last resort for a clause with no punctuation: cut between words."""
    out: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > max_chars:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        out.append(current)
    return out


async def speak(
    triton: TritonGateway,
    text: str,
    *,
    model: str,
    pace: float | None = None,
    speaker: int | None = None,
) -> AsyncIterator[Speech]:
    """Synthesise ``text`` sentence by sentence, one sentence ahead of the consumer.

    Sentences with nothing speakable in them (an emoji line) yield nothing.
    """
    sentences = split_sentences(text)

    def start(sentence: str) -> asyncio.Task[Speech]:
        return asyncio.create_task(
            triton.synthesize(sentence, pace=pace, speaker=speaker, model=model)
        )

    pending = start(sentences[0]) if sentences else None
    try:
        for index in range(len(sentences)):
            assert pending is not None
            speech = await pending
            pending = start(sentences[index + 1]) if index + 1 < len(sentences) else None
            if speech.audio.size:
                yield speech
    finally:
        if pending is not None:
            pending.cancel()
