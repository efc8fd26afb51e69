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
from dataclasses import dataclass, field
from functools import cached_property
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


@dataclass
class _Synthesis:
    """One sentence being synthesised: its audio pieces as they arrive (one, or with the
    streamed voice the first ~0.3 s and then the rest), and what of it was handed on."""

    sentence: str
    pace: float
    first: bool = False  # the reply's first sentence: it runs alone
    streamed: bool = False
    pieces: list[Speech] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a piece, since cleared
    task: asyncio.Task[None] | None = None
    words_out: int = 0
    seconds_out: float = 0.0

    @cached_property
    def estimate_s(self) -> float:
        """How long the sentence should take to say: shares its words among the pieces (only
        a streamed sentence, whose pieces come before it is finished, needs it)."""
        return max(spoken_seconds(self.sentence, self.pace), 0.1)

    def take(self, finished: bool) -> tuple[str, Speech]:
        """The next piece with the words it says: its share of the sentence's, by time; the
        last piece of a finished sentence gets what is left."""
        speech = self.pieces.pop(0)
        words = self.sentence.split()
        self.seconds_out += speech.seconds
        if finished and not self.pieces:
            upto = len(words)
        else:
            share = round(len(words) * self.seconds_out / self.estimate_s)
            upto = max(self.words_out, min(len(words) - 1, share))
        text = " ".join(words[self.words_out : upto])
        self.words_out = upto
        return text, speech


class SentenceSpeaker:
    """Synthesises sentences in the order they are added, at most ``ahead`` at once.

    The one synthesiser of June: the turn adds each sentence as the LLM completes it,
    ``/v1/speak`` adds them all at once. :meth:`ready` hands over what is finished
    without waiting; :meth:`drain` waits for the rest. Sentences with nothing speakable
    in them (an emoji line) give empty audio.

    With ``stream_model`` (a decoupled voice), the first sentence is streamed: its first
    ~0.3 s of audio is handed over as soon as it is decoded, then the rest, each piece with
    its share of the sentence's words. The sentences after it are synthesised whole while
    it plays; the streamed voice and the whole one give the same audio, at the same gain.
    """

    def __init__(
        self,
        triton: TritonGateway,
        *,
        model: str,
        stream_model: str | None = None,
        pace: float | None = None,
        speaker: int | None = None,
        ahead: int = 2,
        deadline: float | None = None,
        parent: Span | None = None,
    ) -> None:
        self.triton = triton
        self.model = model
        self.stream_model = stream_model
        self.pace = pace
        self.speaker = speaker
        self.ahead = ahead
        self.deadline = deadline
        self.parent = parent  # each sentence's span goes under it (the turn's)
        self._waiting: list[str] = []
        self._running: list[_Synthesis] = []
        self._started = 0

    def add(self, sentence: str) -> None:
        if sentence.strip():
            self._waiting.append(sentence)
            self._fill()

    def _fill(self, _: object = None) -> None:
        """Start waiting sentences, up to ``ahead``, but none beside the first: a sentence
        sent beside it may reach the voice model before it (Triton's ensemble does not keep
        the order: 3 times in 10 here, delaying the first audio by a whole sentence), and the
        streamed voice is its own model process, which would share the cores with them (the
        reply's last byte came 0.1 s later). The first sentence is short to wait for, and
        the next is still ready long before its audio has played."""
        while self._waiting and len(self._running) < self.ahead:
            if any(s.first and s.task and not s.task.done() for s in self._running):
                return
            sentence = self._waiting.pop(0)
            first = self._started == 0
            streamed = first and self.stream_model is not None
            synthesis = _Synthesis(sentence, self.pace or 1.0, first=first, streamed=streamed)
            synthesis.task = asyncio.create_task(self._synthesise(synthesis))
            if first:
                synthesis.task.add_done_callback(self._fill)
            self._running.append(synthesis)
            self._started += 1

    async def _synthesise(self, synthesis: _Synthesis) -> None:
        """One sentence, in its own task (its span is current there only)."""
        sentence = synthesis.sentence
        attributes = {"june.characters": len(sentence), "june.streamed": synthesis.streamed}
        with tracing.stage("synthesise", self.parent, **attributes):
            if synthesis.streamed and self.stream_model is not None:
                async for piece in self.triton.synthesize_stream(
                    sentence,
                    pace=self.pace,
                    speaker=self.speaker,
                    model=self.stream_model,
                    deadline=self.deadline,
                ):
                    synthesis.pieces.append(piece)
                    synthesis.arrived.set()
                return
            synthesis.pieces.append(
                await self.triton.synthesize(
                    sentence,
                    pace=self.pace,
                    speaker=self.speaker,
                    model=self.model,
                    deadline=self.deadline,
                )
            )

    async def _pieces(self, wait: bool) -> AsyncIterator[tuple[str, Speech]]:
        while self._running:
            head = self._running[0]
            assert head.task is not None
            if head.pieces:
                yield head.take(finished=head.task.done())
                continue
            if head.task.done():
                await head.task  # raises what the synthesis raised
                self._running.pop(0)
                self._fill()
                continue
            if not wait:
                return
            head.arrived.clear()
            arrived = asyncio.ensure_future(head.arrived.wait())
            try:
                await asyncio.wait({head.task, arrived}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                arrived.cancel()

    def ready(self) -> AsyncIterator[tuple[str, Speech]]:
        """The pieces ready at the head of the queue, with their words, without waiting."""
        return self._pieces(wait=False)

    def drain(self) -> AsyncIterator[tuple[str, Speech]]:
        """Every piece still to come, in order, with its words."""
        return self._pieces(wait=True)

    def cancel(self) -> None:
        for synthesis in self._running:
            if synthesis.task is not None:
                synthesis.task.cancel()
        self._running.clear()
        self._waiting.clear()


async def speak(
    triton: TritonGateway,
    text: str,
    *,
    model: str,
    stream_model: str | None = None,
    pace: float | None = None,
    speaker: int | None = None,
) -> AsyncIterator[Speech]:
    """Synthesise ``text`` sentence by sentence, one sentence ahead of the consumer; with
    ``stream_model``, the first sentence's first ~0.3 s comes as a piece of its own.

    Sentences with nothing speakable in them (an emoji line) yield nothing.
    """
    speaker_ = SentenceSpeaker(
        triton, model=model, stream_model=stream_model, pace=pace, speaker=speaker
    )
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
