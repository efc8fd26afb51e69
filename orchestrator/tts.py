"""Reply text -> speech, sentence by sentence, so the first sentence plays early.

The reply is split into sentences (long ones at commas), each is synthesised by Triton's
TTS model, and the next sentence is already being synthesised while the current one is
encoded and sent.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
from collections.abc import AsyncIterator
from types import ModuleType

from opentelemetry.trace import Span

from orchestrator import tracing
from orchestrator.config import REPO_ROOT
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


class SentenceSpeaker:
    """Synthesises sentences in the order they are added, at most ``ahead`` at once.

    The one synthesiser of June: the turn adds each sentence as the LLM completes it,
    ``/v1/speak`` adds them all at once. :meth:`ready` hands over what is finished
    without waiting; :meth:`drain` waits for the rest. Sentences with nothing speakable
    in them (an emoji line) give empty audio.
    """

    def __init__(
        self,
        triton: TritonGateway,
        *,
        model: str,
        pace: float | None = None,
        speaker: int | None = None,
        ahead: int = 2,
        deadline: float | None = None,
        parent: Span | None = None,
    ) -> None:
        self.triton = triton
        self.model = model
        self.pace = pace
        self.speaker = speaker
        self.ahead = ahead
        self.deadline = deadline
        self.parent = parent  # each sentence's span goes under it (the turn's)
        self._waiting: list[str] = []
        self._running: list[tuple[str, asyncio.Task[Speech]]] = []

    def add(self, sentence: str) -> None:
        if sentence.strip():
            self._waiting.append(sentence)
            self._fill()

    def _fill(self) -> None:
        while self._waiting and len(self._running) < self.ahead:
            sentence = self._waiting.pop(0)
            task = asyncio.create_task(self._synthesise(sentence))
            self._running.append((sentence, task))

    async def _synthesise(self, sentence: str) -> Speech:
        """One sentence, in its own task (its span is current there only)."""
        with tracing.stage("synthesise", self.parent, **{"june.characters": len(sentence)}):
            return await self.triton.synthesize(
                sentence,
                pace=self.pace,
                speaker=self.speaker,
                model=self.model,
                deadline=self.deadline,
            )

    async def ready(self) -> AsyncIterator[tuple[str, Speech]]:
        """The finished sentences at the head of the queue, with their text, without waiting."""
        while self._running and self._running[0][1].done():
            sentence, task = self._running.pop(0)
            speech = await task
            self._fill()
            yield sentence, speech

    async def drain(self) -> AsyncIterator[tuple[str, Speech]]:
        """Every sentence still to come, in order, with its text."""
        while self._running:
            sentence, task = self._running.pop(0)
            speech = await task
            self._fill()
            yield sentence, speech

    def cancel(self) -> None:
        for _, task in self._running:
            task.cancel()
        self._running.clear()
        self._waiting.clear()


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
    speaker_ = SentenceSpeaker(triton, model=model, pace=pace, speaker=speaker)
    for sentence in split_sentences(text):
        speaker_.add(sentence)
    try:
        async for _, speech in speaker_.drain():
            if speech.audio.size:
                yield speech
    finally:
        speaker_.cancel()


def _load_text_rules() -> ModuleType:
    """The TTS models' own normaliser (model_repository/common/tts_text.py), so limits
    are checked here, before any work, with the numbers the models will use."""
    path = REPO_ROOT / "model_repository" / "common" / "tts_text.py"
    spec = importlib.util.spec_from_file_location("june_tts_text", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_text_rules: ModuleType | None = None


class TextTooLong(ValueError):
    """More to say than one request may ask for (HTTP 413)."""

    status = 413


def check_length(text: str, *, pace: float | None, max_chars: int, max_seconds: float) -> None:
    """:class:`TextTooLong` before any work: by the written length, and by how long the
    text takes to say once numbers and dates are spelled out."""
    if len(text) > max_chars:
        raise TextTooLong(f"text has {len(text)} characters; the limit is {max_chars}")
    seconds = spoken_seconds(text, pace or 1.0)
    if seconds > max_seconds:
        raise TextTooLong(
            f"the text would take about {seconds:.0f} s to say; the limit is {max_seconds:.0f} s"
        )


def spoken_seconds(text: str, pace: float = 1.0) -> float:
    """About how long ``text`` takes to say once numbers, dates and units are spelled out."""
    global _text_rules
    if _text_rules is None:
        _text_rules = _load_text_rules()
    return float(_text_rules.spoken_seconds(_text_rules.normalise(text), pace))
