"""The turn service: the one door every channel's turn goes through.

REST (``/v1/voice``, ``/v1/chat`` with text), the Telegram bot and every channel after
them only adapt their I/O to a :class:`TurnRequest` and the events :meth:`TurnService.run`
yields. The service owns everything else, in the order the data flows:

    admit -> reserve the request id -> decode -> gate on speech -> transcribe (asr)
    -> retrieve (embed + pgvector) -> build the prompt -> generate (llm, streamed)
    -> synthesise by sentence (tts) -> encode -> store

Nothing is written until the answer exists: the turn is stored in one transaction at the
end, so a failure anywhere leaves no partial row. A request id is reserved before any
work, so a concurrent duplicate waits and gets the stored turn; a retry after that
gets it at once. Every stage holds an admission slot and runs under the turn's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from opentelemetry.trace import Span
from sqlalchemy.ext.asyncio import async_sessionmaker

from orchestrator import metrics, tracing
from orchestrator.admission import Admission, WorkLimiter, work_units
from orchestrator.audio import (
    MIN_SPEECH_SECONDS,
    OUTPUT_FORMATS,
    SAMPLE_RATE,
    AudioEncoder,
    decode_audio,
    has_speech,
)
from orchestrator.auth import Principal
from orchestrator.chat import SYSTEM_PROMPT, Sampling, fit_messages, token_counter
from orchestrator.config import Settings
from orchestrator.db import conversations as crud
from orchestrator.db.conversations import ConversationNotFound, NewTurn
from orchestrator.db.models import Turn
from orchestrator.log import TURN_ID
from orchestrator.rag import store
from orchestrator.rag.focus import relevant_sentences
from orchestrator.triton.client import ChatChunk, Speech, TritonGateway
from orchestrator.tts import SentenceSpeaker, split_sentences

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["ConversationNotFound", "NoSpeech", "TurnInProgress", "TurnRequest", "TurnService"]

# Grounded replies read their sources out: no penalty for repeating the prompt's words.
GREEDY = Sampling(temperature=0.0, repetition_penalty=1.0)
DIDNT_CATCH = "Sorry, I didn't catch that. Could you say it again?"
_CITATION = re.compile(r"\s*\[\d+\]")

# What a turn yields as it goes: the transcript, reply text deltas, encoded audio (each
# sentence's piece after a ``spoken`` event saying what it says), then the stored turn.
Event = tuple[Literal["transcript", "delta", "spoken", "audio", "done"], object]


class NoSpeech(ValueError):
    """The audio held no speech: answered politely with 422, nothing stored."""


class TurnInProgress(RuntimeError):
    """Another request with this id is still running past this one's deadline (409)."""

    retry_after = 5


@dataclass(frozen=True)
class Spoken:
    """One sentence of a reply as it was synthesised: its text and how long it plays."""

    text: str
    seconds: float
    sample_rate: int


def heard_text(spoken: list[Spoken], heard_s: float) -> str:
    """What a listener heard of a reply stopped after ``heard_s`` seconds of playback: the
    sentences played in full, then the share of the next one's words played so far."""
    words: list[str] = []
    for piece in spoken:
        if heard_s >= piece.seconds:
            words += piece.text.split()
            heard_s -= piece.seconds
            continue
        if piece.seconds > 0 and heard_s > 0:
            said = piece.text.split()
            words += said[: int(len(said) * heard_s / piece.seconds)]
        break
    return " ".join(words)


class Interrupt:
    """Set by a live channel when the user talks over the reply (barge-in).

    The turn stops generating and synthesising at once, and stores the reply as far as
    the user heard it: ``heard_s`` seconds of its audio (or, with no audio, the text so far).
    """

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.heard_s = 0.0

    def set(self, heard_s: float) -> None:
        self.heard_s = max(0.0, heard_s)
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


@dataclass(frozen=True)
class Source:
    ref: int  # the [n] the prompt numbers it with
    document_id: str
    title: str
    score: float
    text: str


@dataclass
class TurnResult:
    conversation_id: uuid.UUID
    turn_id: uuid.UUID
    request_id: str
    transcript: str
    reply: str
    sources: list[Source]
    timings_ms: dict[str, float]
    models: dict[str, str]
    replayed: bool = False  # a retry: the stored turn, not a new one
    interrupted: bool = False  # the user talked over it: ``reply`` is what they heard

    @classmethod
    def from_row(cls, turn: Turn) -> TurnResult:
        return cls(
            conversation_id=turn.conversation_id,
            turn_id=turn.id,
            request_id=turn.request_id,
            transcript=turn.transcript,
            reply=turn.reply,
            sources=[
                Source(s["ref"], s["document_id"], s["title"], s["score"], "") for s in turn.sources
            ],
            timings_ms=dict(turn.timings_ms),
            models=dict(turn.models),
            replayed=True,
            interrupted=turn.interrupted,
        )


@dataclass(frozen=True)
class TurnRequest:
    """One turn as a channel hands it over: a spoken (``audio``) or typed (``text``) question."""

    principal: Principal
    request_id: str
    audio: bytes | None = None
    text: str | None = None
    conversation_id: uuid.UUID | None = None
    language: str | None = None
    fmt: str | None = None  # the reply's audio format; None: text only
    max_audio_seconds: float | None = None  # a channel's own, tighter limit
    replay_audio: bool = True  # a retried request gets its stored answer spoken again
    interrupt: Interrupt | None = None  # a live channel's barge-in


@dataclass
class Stopwatch:
    """Per-stage wall time, observed into the stage-latency histogram and marked on the
    turn's span (``span``): the stages' own spans are its children."""

    timings_ms: dict[str, float] = field(default_factory=dict)
    span: Span | None = None
    _start: float = field(default_factory=time.perf_counter)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        seconds = now - self._start
        self._start = now
        self.timings_ms[stage] = round(self.timings_ms.get(stage, 0.0) + seconds * 1000, 1)
        metrics.STAGE_LATENCY.labels(stage=stage).observe(seconds)
        if self.span is not None:
            self.span.add_event(stage, {"june.ms": round(seconds * 1000, 1)})


def spoken(reply: str) -> str:
    """The reply as it should be said: citation markers like [1] are for reading only."""
    return _CITATION.sub("", reply).strip()


def served_models(repository: Path) -> dict[str, str]:
    """Which weights and exporter produced each served pipeline (from manifest.json)."""
    try:
        manifest = json.loads((repository / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out = {}
    for name in ("asr_whisper", "embed_encoder", "llm", "tts_piper_vits", "tts_acoustic"):
        entry = manifest.get("models", {}).get(name)
        if entry and entry.get("source"):
            out[name] = f"{entry['source']} (exporter {entry.get('exporter_version', '?')})"
    return out


class TurnService:
    """Runs every turn of one app: settings, the Triton gateway, the database, admission."""

    def __init__(
        self,
        settings: Settings,
        triton: TritonGateway,
        sessions: async_sessionmaker,
        *,
        admission: Admission | None = None,
        work: WorkLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.triton = triton
        self.sessions = sessions
        self.admission = admission or Admission(settings)
        self.work = work or WorkLimiter(settings.rate_limit_work_per_minute)
        self.models = served_models(settings.model_repository)
        self.count_tokens: Callable[[str], int] = token_counter(
            settings.model_repository / "llm" / "1" / "tokenizer.json"
        )

    # --- the whole turn -------------------------------------------------------------------

    async def run(self, request: TurnRequest) -> AsyncIterator[Event]:
        """The turn, as events: ``transcript``, ``delta``s, ``audio`` pieces, ``done``.

        Raises before the first event for what the caller did wrong or what it must retry:
        :class:`ConversationNotFound`, :class:`NoSpeech`, ``AudioError``,
        ``RateLimited``, ``Overloaded``, :class:`TurnInProgress`.
        """
        deadline = time.monotonic() + self.settings.turn_deadline_s
        TURN_ID.set(request.request_id)  # on every log line from here (the turn's own task)
        span = tracing.start("turn", **{"june.turn_id": request.request_id})
        events = self._run(request, deadline, span)
        with tracing.ended(span):
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()  # a consumer that leaves releases the turn at once

    async def _run(self, request: TurnRequest, deadline: float, span: Span) -> AsyncIterator[Event]:
        principal = request.principal
        await self._charge(request)
        # The turn's slot first: a full server refuses at once, before any database work.
        async with self.admission.slot("turn", deadline):
            async with self.sessions() as session:  # also: 404 before any work
                history = await crud.history(
                    session, user_id=principal.user_id, conversation_id=request.conversation_id
                )
            token = await self._reserve(request, deadline)
            if isinstance(token, TurnResult):  # already answered: the stored turn
                span.set_attribute("june.replayed", True)
                fmt = request.fmt if request.replay_audio else None
                async for event in self._replay(token, fmt, deadline):
                    yield event
                return
            stored = False
            try:
                clock = Stopwatch(span=span)
                question = await self._question(request, clock, deadline)
                yield "transcript", question
                async for event in self._respond(
                    request, question, history, token, clock, deadline
                ):
                    stored = stored or event[0] == "done"
                    yield event
            finally:
                if not stored:
                    await self._release(request, token)

    async def _charge(self, request: TurnRequest) -> None:
        """Weigh the turn against the key's work budget (audio is weighed once decoded)."""
        tokens = self.settings.turn_max_tokens
        characters = tokens * 5 if request.fmt else 0
        await self.work.charge(
            request.principal.key_id, work_units(tokens=tokens, characters=characters)
        )

    async def _question(self, request: TurnRequest, clock: Stopwatch, deadline: float) -> str:
        if request.audio is None:
            assert request.text is not None
            return request.text.strip()
        audio = await self.decode(request.audio, clock, request.max_audio_seconds)
        await self.work.charge(
            request.principal.key_id, work_units(audio_seconds=len(audio) / 16000)
        )
        return await self.transcribe(audio, request.language, clock, deadline)

    # --- the stages, in order -------------------------------------------------------------

    async def decode(
        self, data: bytes, clock: Stopwatch, max_seconds: float | None = None
    ) -> np.ndarray:
        limit = min(max_seconds or self.settings.max_audio_seconds, self.settings.max_audio_seconds)
        with tracing.stage("decode", clock.span, **{"june.bytes": len(data)}):
            audio = await asyncio.to_thread(decode_audio, data, max_seconds=limit)
        clock.lap("decode")
        return audio

    async def speech(self, audio: np.ndarray, deadline: float) -> np.ndarray | None:
        """The stretch of ``audio`` from its first to its last speech, or None for none.

        An energy gate goes first: silence and steady noise never reach a model. Silero VAD
        then finds the speech; leading and trailing silence are cut, since Whisper's encoder
        would pay for them (the adaptive window is sized to what is left).
        """
        if not await asyncio.to_thread(has_speech, audio):
            return None
        segments = await self.triton.speech_segments(audio, deadline=deadline)
        if sum(b - a for a, b in segments) < MIN_SPEECH_SECONDS:
            return None
        start, end = int(segments[0][0] * SAMPLE_RATE), int(segments[-1][1] * SAMPLE_RATE)
        return audio[start:end]

    async def transcribe(
        self, audio: np.ndarray, language: str | None, clock: Stopwatch, deadline: float
    ) -> str:
        """Whisper's transcript of the speech; :class:`NoSpeech` for noise, clicks and
        silence (Whisper invents words for them: "you", "you you you"). The model then
        applies Whisper's own no-speech and repetition rules."""
        with tracing.stage(
            "vad", clock.span, **{"june.audio_s": round(len(audio) / SAMPLE_RATE, 2)}
        ):
            speech = await self.speech(audio, deadline)
        clock.lap("vad")
        if speech is None:
            metrics.TURN_ERRORS.labels(kind="no_speech").inc()
            raise NoSpeech(DIDNT_CATCH)
        with tracing.stage(
            "transcribe", clock.span, **{"june.speech_s": round(len(speech) / SAMPLE_RATE, 2)}
        ):
            result = await self.triton.transcribe(speech, language=language, deadline=deadline)
        clock.lap("transcribe")
        if not result.text.strip():
            metrics.TURN_ERRORS.labels(kind="no_speech").inc()
            raise NoSpeech(DIDNT_CATCH)
        return result.text.strip()

    async def retrieve(
        self, question: str, user_id: str, clock: Stopwatch, deadline: float
    ) -> list[Source]:
        with tracing.stage("retrieve", clock.span) as span:
            async with self.sessions() as session:
                hits = await store.search(
                    session,
                    self.triton,
                    query=question,
                    user_id=user_id,
                    top_k=self.settings.rag_top_k,
                    min_score=self.settings.rag_min_score,
                    deadline=deadline,
                )
            span.set_attribute("june.sources", len(hits))
        clock.lap("retrieve")
        return [
            Source(i + 1, str(h.document_id), h.title, round(h.score, 4), h.text)
            for i, h in enumerate(hits)
        ]

    def build_prompt(
        self,
        question: str,
        sources: list[Source],
        history: list[Turn],
        *,
        budget: int | None = None,
    ) -> list[dict[str, str]]:
        # The sources go with the question, not in the system prompt: small models follow
        # what is next to the question (measured: SmolLM2 then answers follow-ups from them).
        asked = question
        if sources:
            keep = self.settings.rag_passage_sentences
            listed = "\n".join(
                f"[{s.ref}] {s.title}: {relevant_sentences(s.text, question, keep)}"
                for s in sources
            )
            asked = f"Sources:\n{listed}\n\nQuestion: {question}"
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        for turn in history:
            messages.append({"role": "user", "content": turn.transcript})
            messages.append({"role": "assistant", "content": turn.reply})
        messages.append({"role": "user", "content": asked})
        fitted, _ = fit_messages(
            messages, budget=budget or self.settings.llm_prompt_tokens, count=self.count_tokens
        )
        return fitted

    async def generate(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        deadline: float,
        parent: Span | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """The reply as it streams; a thinking model's reasoning is kept apart (in
        ``reasoning``), so it is never spoken, shown or sent as the reply.

        Its ``generate`` span is current only while the next chunk is awaited, so the
        Triton stream is its child and nothing leaks to the consumer across a yield."""
        settings = self.settings
        span = tracing.start("generate", parent, **{"june.max_tokens": max_tokens})
        stream = self.triton.chat_stream(
            messages,
            max_tokens=max_tokens,
            sampling=GREEDY if settings.turn_sampling == "greedy" else Sampling(),
            thinking=settings.thinking_turns,
            deadline=deadline,
        )
        with tracing.ended(span):
            try:
                while True:
                    with tracing.current(span):
                        try:
                            chunk = await anext(stream)
                        except StopAsyncIteration:
                            break
                    yield chunk
            finally:
                await stream.aclose()

    async def reply_tokens(self) -> int:
        """A turn's token budget. A model that always thinks (Qwen3 Thinking-2507) gets the
        thinking budget even with thinking off: its reply comes only after its reasoning."""
        settings = self.settings
        thinks = settings.thinking_turns or await self.triton.thinking_mode() == "always"
        return settings.turn_thinking_max_tokens if thinks else settings.turn_max_tokens

    def speaker(self, deadline: float, parent: Span | None = None) -> SentenceSpeaker:
        return SentenceSpeaker(
            self.triton,
            model=self.settings.tts_model,
            stream_model=self.settings.tts_stream_model,
            deadline=deadline,
            parent=parent,
        )

    async def _respond(
        self,
        request: TurnRequest,
        question: str,
        history: list[Turn],
        token: uuid.UUID,
        clock: Stopwatch,
        deadline: float,
    ) -> AsyncIterator[Event]:
        """Answer ``question``, speak the answer in ``request.fmt``, then store the turn.

        Each sentence is synthesised as soon as the LLM completes it; its audio is
        yielded as soon as it is ready and everything before it has been sent.
        """
        principal = request.principal
        sources = await self.retrieve(question, principal.user_id, clock, deadline)
        max_tokens = await self.reply_tokens()
        budget = await self.triton.prompt_budget(self.settings.llm_prompt_tokens, max_tokens)
        messages = self.build_prompt(question, sources, history, budget=budget)
        clock.lap("prompt")
        sentences = SentenceBuffer()
        voice, out = None, None
        if request.fmt:
            voice = self.speaker(deadline, clock.span)
            out = ReplyAudio(request.fmt, on_first=lambda: clock.lap("first_audio"))

        reply: list[str] = []
        reasoning: list[str] = []
        said: list[Spoken] = []  # each sentence's audio, as it is sent
        interrupt = request.interrupt
        stop = interrupt.event if interrupt is not None else None
        try:
            generated = self.generate(messages, max_tokens, deadline, clock.span)
            async for chunk in until(generated, stop):
                reasoning.append(chunk.reasoning)
                delta = chunk.delta
                if not delta:
                    continue
                if not reply:
                    clock.lap("first_token")  # the LLM's prefill of the whole prompt
                reply.append(delta)
                yield "delta", delta
                if voice is not None and out is not None:
                    for sentence in sentences.push(delta):
                        voice.add(spoken(sentence))
                    async for text, speech in voice.ready():
                        said.append(Spoken(text, speech.seconds, speech.sample_rate))
                        yield "spoken", said[-1]
                        yield "audio", await out.write(speech)
            clock.lap("generate")
            if voice is not None and out is not None and not (stop and stop.is_set()):
                for sentence in sentences.flush():
                    voice.add(spoken(sentence))
                async for text, speech in until(voice.drain(), stop):
                    said.append(Spoken(text, speech.seconds, speech.sample_rate))
                    yield "spoken", said[-1]
                    yield "audio", await out.write(speech)
            if voice is not None and out is not None:
                yield "audio", out.close()
                clock.lap("synthesise")
        finally:
            if voice is not None:
                voice.cancel()
        interrupted = interrupt is not None and interrupt.is_set()
        answer = "".join(reply).strip()
        if interrupted and interrupt is not None and voice is not None:
            answer = heard_text(said, interrupt.heard_s)
        # What an operator needs, never the user's words: sizes and stage times.
        log.info(
            "turn answered: %d sources, %d reply characters%s, stages %s ms",
            len(sources),
            len(answer),
            " (interrupted)" if interrupted else "",
            clock.timings_ms,
        )
        with tracing.stage("store", clock.span):
            stored = await self.store(
                request,
                token,
                NewTurn(
                    user_id=principal.user_id,
                    request_id=request.request_id,
                    transcript=question,
                    reply=answer,
                    sources=[
                        {
                            "ref": s.ref,
                            "document_id": s.document_id,
                            "title": s.title,
                            "score": s.score,
                        }
                        for s in sources
                    ],
                    timings_ms=clock.timings_ms,
                    models=self.models,
                    interrupted=interrupted,
                    reasoning="".join(reasoning).strip() or None
                    if self.settings.store_reasoning
                    else None,
                ),
                sources,
            )
        yield "done", stored

    async def interrupted(
        self, principal: Principal, result: TurnResult, said: list[Spoken], heard_s: float
    ) -> str:
        """The user talked over a stored turn's reply while it played: keep what they heard."""
        heard = heard_text(said, heard_s)
        async with self.sessions() as session:
            await crud.mark_interrupted(
                session, user_id=principal.user_id, turn_id=result.turn_id, heard=heard
            )
        return heard

    async def store(
        self, request: TurnRequest, token: uuid.UUID, turn: NewTurn, sources: list[Source]
    ) -> TurnResult:
        async with self.sessions() as session:
            row = await crud.store_turn(
                session, turn=turn, conversation_id=request.conversation_id, token=token
            )
        result = TurnResult.from_row(row)
        result.sources, result.replayed = sources, False
        return result

    # --- exactly once -----------------------------------------------------------------------

    async def _reserve(self, request: TurnRequest, deadline: float) -> uuid.UUID | TurnResult:
        """Our reservation of the request id, or the turn stored under it.

        While another request holds the id, wait for its turn to be stored (or for it to
        fail, and then run the turn ourselves). The holder stores its turn and ends its
        reservation in one commit, so we reserve first and only then look for the stored
        turn: that look sees every commit made before our reservation. (Looking first left
        a gap: a commit landing between the look and the reservation let a retry run the
        turn again, and storing it failed with a 500 on the other replica.)
        """
        user_id, request_id = request.principal.user_id, request.request_id
        while True:
            async with self.sessions() as session:
                token = await crud.reserve_request(
                    session,
                    user_id=user_id,
                    request_id=request_id,
                    ttl_s=self.settings.turn_deadline_s + 30,
                )
                if token is not None:
                    stored = await crud.find_turn(session, user_id=user_id, request_id=request_id)
                    if stored is None:
                        return token
                    await crud.release_request(
                        session, user_id=user_id, request_id=request_id, token=token
                    )
                    return TurnResult.from_row(stored)
            if time.monotonic() > deadline - 0.25:
                raise TurnInProgress(
                    f"request {request_id!r} is still being answered; retry it to get the answer"
                )
            await asyncio.sleep(0.25)

    async def _release(self, request: TurnRequest, token: uuid.UUID) -> None:
        try:
            async with self.sessions() as session:
                await crud.release_request(
                    session,
                    user_id=request.principal.user_id,
                    request_id=request.request_id,
                    token=token,
                )
        except Exception as exc:  # it expires by itself; the turn's own error matters more
            log.warning("could not release request %r: %s", request.request_id, exc)

    async def _replay(
        self, result: TurnResult, fmt: str | None, deadline: float
    ) -> AsyncIterator[Event]:
        """A retried request: the stored turn, its answer spoken again (audio is not kept)."""
        yield "transcript", result.transcript
        yield "delta", result.reply
        if fmt:
            voice = self.speaker(deadline)
            for sentence in split_sentences(spoken(result.reply) or result.reply):
                voice.add(sentence)
            out = ReplyAudio(fmt)
            try:
                async for text, speech in voice.drain():
                    yield "spoken", Spoken(text, speech.seconds, speech.sample_rate)
                    yield "audio", await out.write(speech)
            finally:
                voice.cancel()
            yield "audio", out.close()
        yield "done", result


class ReplyAudio:
    """A reply's sentences as one encoded audio stream, opened at the first sentence's
    sample rate (``on_first`` is called then)."""

    def __init__(self, fmt: str, *, on_first: Callable[[], None] | None = None) -> None:
        self.format = OUTPUT_FORMATS[fmt]
        self.on_first = on_first
        self._encoder: AudioEncoder | None = None

    async def write(self, speech: Speech) -> bytes:
        first = self._encoder is None
        if self._encoder is None:
            self._encoder = AudioEncoder(self.format, speech.sample_rate)
        chunk = await asyncio.to_thread(self._encoder.write, speech.audio)
        if first and self.on_first is not None:
            self.on_first()
        return chunk

    def close(self) -> bytes:
        """The stream's last bytes (none when no sentence had audio)."""
        return self._encoder.close() if self._encoder is not None else b""


async def until(items: AsyncIterator[T], stop: asyncio.Event | None) -> AsyncIterator[T]:
    """``items`` until ``stop`` is set: the item being awaited then is cancelled at once
    (a Triton stream or a synthesis), not waited for."""
    if stop is None:
        async for item in items:
            yield item
        return
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            step = asyncio.ensure_future(anext(items))  # type: ignore[arg-type]
            await asyncio.wait({step, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                return
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        stopped.cancel()
        with contextlib.suppress(RuntimeError):  # already closed by the cancelled step
            await items.aclose()  # type: ignore[attr-defined]


async def collect(events: AsyncIterator[Event]) -> tuple[TurnResult, bytes]:
    """A whole turn at once: the stored turn and all its audio joined."""
    audio = bytearray()
    result: TurnResult | None = None
    try:
        async for kind, value in events:
            if kind == "audio":
                audio += value  # type: ignore[operator]
            elif kind == "done":
                result = value  # type: ignore[assignment]
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert result is not None
    return result, bytes(audio)


# A clause ends at a comma, semicolon or colon followed by more text, or at one that ends
# the text so far after a letter: that needs no next token to tell it from "1,000".
_CLAUSE_END = re.compile(r"(?<=\w[,;:])\s+(?=\S)|(?<=[^\W\d_][,;:])$")
MIN_CLAUSE_PART_WORDS = 3


class SentenceBuffer:
    """Collects streamed text and hands out each sentence as soon as it is complete.

    The very first piece may be a clause: once it has ``first_clause_words`` words and
    ends at a comma, it is spoken while the rest of the sentence is still being generated,
    so the first audio comes sooner.
    """

    def __init__(self, first_clause_words: int = 4) -> None:
        self._text = ""
        self._first = True
        self.first_clause_words = first_clause_words

    def push(self, delta: str) -> list[str]:
        self._text += delta
        pieces = split_sentences(self._text)
        done = pieces[:-1]
        self._text = pieces[-1] if pieces else ""
        if self._first and not done:
            for match in _CLAUSE_END.finditer(self._text):
                clause = self._text[: match.start()]
                # "Buy milk, eggs," is a list cut short, not a clause: the last part must
                # be a phrase of its own
                last_part = re.split(r"[,;:]\s+", clause.rstrip(",;:"))[-1]
                if (
                    len(clause.split()) >= self.first_clause_words
                    and len(last_part.split()) >= MIN_CLAUSE_PART_WORDS
                ):
                    done, self._text = [clause], self._text[match.end() :]
                    break
        if done:
            self._first = False
        return done

    def flush(self) -> list[str]:
        rest, self._text = self._text.strip(), ""
        return [rest] if rest else []
