"""The voice turn: a spoken (or typed) question in, a grounded spoken answer out.

The stages run in the order the data flows, one small function each:

    decode -> transcribe (asr) -> retrieve (embed + pgvector) -> build the prompt
    -> generate (llm, streamed) -> synthesise by sentence (tts) -> encode -> store

Nothing is written until the answer exists: the turn is stored in one transaction at the
end, so a failure anywhere leaves no partial row, and a retried request id returns the
stored turn instead of adding another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orchestrator import metrics
from orchestrator.audio import OUTPUT_FORMATS, AudioEncoder, decode_audio
from orchestrator.auth import Principal
from orchestrator.chat import fit_messages, token_counter
from orchestrator.config import Settings
from orchestrator.db.models import Conversation, Turn
from orchestrator.rag import store
from orchestrator.triton.client import TritonGateway
from orchestrator.tts import split_sentences

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are June, a helpful voice assistant. Answer in one to three short sentences of "
    "plain spoken English. When the numbered sources given with a question answer it, "
    "answer from them. Otherwise answer from the conversation, or say that you do not know."
)
DIDNT_CATCH = "Sorry, I didn't catch that. Could you say it again?"
_CITATION = re.compile(r"\s*\[\d+\]")


# What a turn yields as it goes: reply text deltas, encoded audio, then the stored turn.
Event = tuple[Literal["delta", "audio", "done"], object]


class NoSpeech(ValueError):
    """The audio held no speech: answered politely with 422, without an LLM call."""


class ConversationNotFound(LookupError):
    """No conversation with that id belongs to the caller (404)."""


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


@dataclass
class Stopwatch:
    """Per-stage wall time, also observed into the stage-latency histogram."""

    timings_ms: dict[str, float] = field(default_factory=dict)
    _start: float = field(default_factory=time.perf_counter)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        seconds = now - self._start
        self._start = now
        self.timings_ms[stage] = round(self.timings_ms.get(stage, 0.0) + seconds * 1000, 1)
        metrics.STAGE_LATENCY.labels(stage=stage).observe(seconds)


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


class VoiceTurn:
    """Runs turns for one app: holds the settings, the Triton gateway and the database."""

    def __init__(
        self, settings: Settings, triton: TritonGateway, sessions: async_sessionmaker
    ) -> None:
        self.settings = settings
        self.triton = triton
        self.sessions = sessions
        self.models = served_models(settings.model_repository)
        self.count_tokens: Callable[[str], int] = token_counter(
            settings.model_repository / "llm" / "1" / "tokenizer.json"
        )

    # --- the stages, in order -------------------------------------------------------------

    async def decode(self, data: bytes, clock: Stopwatch) -> np.ndarray:
        audio = await asyncio.to_thread(
            decode_audio, data, max_seconds=self.settings.max_audio_seconds
        )
        clock.lap("decode")
        return audio

    async def transcribe(self, audio: np.ndarray, language: str | None, clock: Stopwatch) -> str:
        result = await self.triton.transcribe(audio, language=language)
        clock.lap("transcribe")
        if not result.text.strip():
            raise NoSpeech(DIDNT_CATCH)
        return result.text.strip()

    async def retrieve(
        self, session: AsyncSession, question: str, user_id: str, clock: Stopwatch
    ) -> list[Source]:
        hits = await store.search(
            session,
            self.triton,
            query=question,
            user_id=user_id,
            top_k=self.settings.rag_top_k,
            min_score=self.settings.rag_min_score,
        )
        clock.lap("retrieve")
        return [
            Source(i + 1, str(h.document_id), h.title, round(h.score, 4), h.text)
            for i, h in enumerate(hits)
        ]

    def build_prompt(
        self, question: str, sources: list[Source], history: list[Turn]
    ) -> list[dict[str, str]]:
        # The sources go with the question, not in the system prompt: small models follow
        # what is next to the question (measured: SmolLM2 then answers follow-ups from them).
        asked = question
        if sources:
            listed = "\n".join(f"[{s.ref}] {s.title}: {s.text}" for s in sources)
            asked = f"Sources:\n{listed}\n\nQuestion: {question}"
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        for turn in history:
            messages.append({"role": "user", "content": turn.transcript})
            messages.append({"role": "assistant", "content": turn.reply})
        messages.append({"role": "user", "content": asked})
        fitted, _ = fit_messages(
            messages, budget=self.settings.llm_prompt_tokens, count=self.count_tokens
        )
        return fitted

    async def generate(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        async for chunk in self.triton.chat_stream(
            messages, max_tokens=self.settings.turn_max_tokens, temperature=0.0
        ):
            if chunk.delta:
                yield chunk.delta

    async def synthesise(self, sentence: str) -> tuple[np.ndarray, int]:
        speech = await self.triton.synthesize(spoken(sentence), model=self.settings.tts_model)
        return speech.audio, speech.sample_rate

    async def store(
        self, principal: Principal, conversation_id: uuid.UUID | None, result: TurnResult
    ) -> TurnResult:
        """Write the turn (and a new conversation) in one transaction; a retry finds it."""
        async with self.sessions() as session:
            try:
                if conversation_id is None:
                    conversation = Conversation(user_id=principal.user_id)
                    session.add(conversation)
                    await session.flush()
                    conversation_id = conversation.id
                ordinal = await session.scalar(
                    select(func.coalesce(func.max(Turn.ordinal), 0)).where(
                        Turn.conversation_id == conversation_id
                    )
                )
                turn = Turn(
                    conversation_id=conversation_id,
                    user_id=principal.user_id,
                    request_id=result.request_id,
                    ordinal=int(ordinal or 0) + 1,
                    transcript=result.transcript,
                    reply=result.reply,
                    sources=[
                        {
                            "ref": s.ref,
                            "document_id": s.document_id,
                            "title": s.title,
                            "score": s.score,
                        }
                        for s in result.sources
                    ],
                    timings_ms=result.timings_ms,
                    models=result.models,
                )
                session.add(turn)
                await session.commit()
            except IntegrityError:
                await session.rollback()
                stored = await self.find(session, principal, result.request_id)
                if stored is None:
                    raise
                return stored
        result.conversation_id, result.turn_id = conversation_id, turn.id
        return result

    # --- conversations --------------------------------------------------------------------

    @staticmethod
    async def owned_conversation(
        session: AsyncSession, principal: Principal, conversation_id: uuid.UUID
    ) -> Conversation:
        """The caller's conversation; ConversationNotFound for a missing or another's one."""
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None or conversation.user_id != principal.user_id:
            raise ConversationNotFound(f"no conversation {conversation_id}")
        return conversation

    async def history(
        self, session: AsyncSession, principal: Principal, conversation_id: uuid.UUID | None
    ) -> list[Turn]:
        """The conversation's turns in order (none for a new conversation)."""
        if conversation_id is None:
            return []
        await self.owned_conversation(session, principal, conversation_id)
        turns = await session.scalars(
            select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.ordinal)
        )
        return list(turns)

    async def check_conversation(self, principal: Principal, conversation_id: uuid.UUID) -> None:
        """Raise ConversationNotFound unless the conversation is the caller's."""
        async with self.sessions() as session:
            await self.owned_conversation(session, principal, conversation_id)

    async def find(
        self, session: AsyncSession, principal: Principal, request_id: str
    ) -> TurnResult | None:
        turn = await session.scalar(
            select(Turn).where(Turn.user_id == principal.user_id, Turn.request_id == request_id)
        )
        if turn is None:
            return None
        return TurnResult(
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
        )

    # --- the whole turn -------------------------------------------------------------------

    async def answer(
        self,
        principal: Principal,
        *,
        question: str,
        conversation_id: uuid.UUID | None,
        request_id: str,
        clock: Stopwatch,
    ) -> AsyncIterator[str | TurnResult]:
        """Retrieve, prompt and generate: yields reply text deltas, then the stored turn."""
        async with self.sessions() as session:
            history = await self.history(session, principal, conversation_id)
            sources = await self.retrieve(session, question, principal.user_id, clock)
        messages = self.build_prompt(question, sources, history)
        clock.lap("prompt")
        reply: list[str] = []
        async for delta in self.generate(messages):
            reply.append(delta)
            yield delta
        clock.lap("generate")
        result = TurnResult(
            conversation_id=conversation_id or uuid.uuid4(),
            turn_id=uuid.uuid4(),
            request_id=request_id,
            transcript=question,
            reply="".join(reply).strip(),
            sources=sources,
            timings_ms=clock.timings_ms,
            models=self.models,
        )
        yield result

    async def replay(self, principal: Principal, request_id: str) -> TurnResult | None:
        async with self.sessions() as session:
            return await self.find(session, principal, request_id)

    async def respond(
        self,
        principal: Principal,
        *,
        question: str,
        conversation_id: uuid.UUID | None,
        request_id: str,
        fmt: str | None,
        clock: Stopwatch,
    ) -> AsyncIterator[Event]:
        """Answer ``question``, speak the answer in ``fmt`` (None: text only), then store.

        Yields reply text deltas and encoded audio as they are ready (each sentence is
        synthesised as soon as the LLM completes it), then the stored turn.
        """
        sentences = SentenceBuffer()
        pending: list[asyncio.Task] = []
        encoder: AudioEncoder | None = None

        async def audio_of(task: asyncio.Task) -> bytes:
            nonlocal encoder
            samples, rate = await task
            first = encoder is None
            if encoder is None:
                encoder = AudioEncoder(OUTPUT_FORMATS[str(fmt)], rate)
            chunk = await asyncio.to_thread(encoder.write, samples)
            if first:
                clock.lap("first_audio")
            return chunk

        def synthesise(pieces: list[str]) -> list[asyncio.Task]:
            return [asyncio.create_task(self.synthesise(s)) for s in pieces]

        result: TurnResult | None = None
        try:
            async for item in self.answer(
                principal,
                question=question,
                conversation_id=conversation_id,
                request_id=request_id,
                clock=clock,
            ):
                if isinstance(item, TurnResult):
                    result = item
                    break
                yield "delta", item
                if fmt:
                    pending += synthesise(sentences.push(item))
                while pending and pending[0].done():
                    yield "audio", await audio_of(pending.pop(0))
            if fmt:
                pending += synthesise(sentences.flush())
                while pending:
                    yield "audio", await audio_of(pending.pop(0))
                if encoder is not None:
                    yield "audio", encoder.close()
                clock.lap("synthesise")
        finally:
            for task in pending:
                task.cancel()
        assert result is not None
        yield "done", await self.store(principal, conversation_id, result)


async def collect(events: AsyncIterator[Event]) -> tuple[TurnResult, bytes]:
    """A whole turn at once: the stored turn and all its audio joined."""
    audio = bytearray()
    result: TurnResult | None = None
    async for kind, value in events:
        if kind == "audio":
            audio += value  # type: ignore[operator]
        elif kind == "done":
            result = value  # type: ignore[assignment]
    assert result is not None
    return result, bytes(audio)


_CLAUSE_END = re.compile(r"(?<=\w[,;:])\s+(?=\S)")


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
                if len(clause.split()) >= self.first_clause_words:
                    done, self._text = [clause], self._text[match.end() :]
                    break
        if done:
            self._first = False
        return done

    def flush(self) -> list[str]:
        rest, self._text = self._text.strip(), ""
        return [rest] if rest else []
