"""Request and response bodies of the REST API."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

# Control characters but tab, newline and carriage return (C0, DEL and C1). PostgreSQL
# text cannot hold NUL at all; the others are never meant in a question or a document.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def strip_controls(value: str) -> str:
    """``value`` without control characters (tab, newline and carriage return are kept)."""
    return _CONTROL.sub("", value)


def _clean_text(value: str) -> str:
    value = strip_controls(value)
    if not value.strip():
        raise ValueError("must contain some non-whitespace text")
    return value


def _clean_optional(value: str | None) -> str | None:
    return None if value is None else strip_controls(value)


def clean_request_id(value: str) -> str:
    """A request id is 1-128 printable ASCII characters without spaces; else ValueError."""
    if not _REQUEST_ID.fullmatch(value):
        raise ValueError(
            "request_id must be 1-128 printable ASCII characters, without spaces or control "
            "characters"
        )
    return value


class DocumentIn(BaseModel):
    title: str = Field(min_length=1, max_length=300, examples=["Office hours"])
    text: str = Field(min_length=1, description="Plain text; chunked and embedded on ingest.")
    source: str | None = Field(None, max_length=2000, description="Where the text came from.")
    shared: bool = Field(False, description="Readable by every user (admin keys only).")

    _clean_title = field_validator("title")(_clean_text)
    _clean_body = field_validator("text")(_clean_text)
    _clean_source = field_validator("source")(_clean_optional)


class DocumentOut(BaseModel):
    id: uuid.UUID
    title: str
    source: str | None
    n_chars: int
    n_chunks: int
    created_at: datetime
    shared: bool


class DocumentList(BaseModel):
    documents: list[DocumentOut]
    limit: int
    offset: int


class SearchIn(BaseModel):
    query: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(5, ge=1, le=50, description="How many passages to return (1-50).")
    min_score: float | None = Field(
        None, ge=-1.0, le=1.0, description="Drop passages below this cosine similarity."
    )

    _clean_query = field_validator("query")(_clean_text)


class SearchResult(BaseModel):
    document_id: uuid.UUID
    title: str
    chunk_id: int
    ordinal: int
    text: str
    score: float


class SearchOut(BaseModel):
    query: str
    results: list[SearchResult]


class Health(BaseModel):
    status: str
    triton: str
    database: str
    models: dict[str, str] = Field(
        default_factory=dict, description="Each pipeline: up, or down with the reason."
    )


class ErrorOut(BaseModel):
    detail: str | list


class TranscriptOut(BaseModel):
    text: str = Field(description="Empty when the audio holds no speech.")
    language: str = Field(description="The language used: forced, or detected.")
    no_speech_prob: float
    duration_s: float
    speech_s: float = Field(
        description="Seconds transcribed: from the first to the last speech the VAD found."
    )
    timings_ms: dict[str, float]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)

    _clean_content = field_validator("content")(strip_controls)


class ChatIn(BaseModel):
    """Either ``messages`` (the model alone, no memory or retrieval) or ``text`` (a turn)."""

    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=200)
    text: str | None = Field(
        None,
        min_length=1,
        max_length=4000,
        description="A turn, as /v1/voice runs it but typed: retrieval from the caller's and "
        "shared documents, the conversation's memory, and a stored turn.",
    )
    conversation_id: uuid.UUID | None = Field(None, description="With text: continue it.")
    request_id: str | None = Field(None, max_length=128, description="With text: idempotency.")
    audio: Literal["ogg", "wav", "mp3"] | None = Field(
        None, description="With text: also speak the reply in this format."
    )
    system: str | None = Field(None, max_length=20_000, description="Prepended; never truncated.")
    max_tokens: int = Field(256, ge=1, le=2048)
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="0 is greedy. Left out: the model's default."
    )
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Left out: the model's.")
    top_k: int | None = Field(None, ge=0, description="0: no cut. Left out: the model's.")
    repetition_penalty: float | None = Field(
        None, gt=0.0, le=2.0, description="1 is none. Left out: the model's default."
    )
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: int | None = Field(None, ge=0)
    thinking: bool | None = Field(
        None,
        description="Let a thinking model (Qwen3) think first. Left out: JUNE_THINKING_CHAT.",
    )
    include_reasoning: bool = Field(
        False, description="Also return a thinking model's reasoning (never part of text)."
    )
    stream: bool = False

    _clean_text = field_validator("text", "system")(_clean_optional)

    @field_validator("stop")
    @classmethod
    def _clean_stop(cls, value: list[str]) -> list[str]:
        return [cleaned for v in value if (cleaned := strip_controls(v))]

    @field_validator("request_id")
    @classmethod
    def _request_id(cls, value: str | None) -> str | None:
        return None if value is None else clean_request_id(value)

    @model_validator(mode="after")
    def _messages_or_text(self) -> ChatIn:
        if (self.messages is None) == (self.text is None):
            raise ValueError("send either messages (a plain chat) or text (a turn), not both")
        if self.text is not None and not self.text.strip():
            raise ValueError("text is empty")
        return self

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, value: list[ChatMessage] | None) -> list[ChatMessage] | None:
        if value is None:
            return value
        if value[-1].role != "user":
            raise ValueError("the last message must be from the user")
        if not value[-1].content.strip():
            raise ValueError("the last message is empty")
        return value


class ChatOut(BaseModel):
    text: str
    reasoning: str | None = Field(
        None, description="A thinking model's reasoning, with include_reasoning only."
    )
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    dropped_messages: int = Field(description="Oldest history messages left out to fit the budget.")


class SpeakIn(BaseModel):
    text: str = Field(description="What to say. Longer than tts_max_chars gets 413.")
    format: Literal["ogg", "wav", "mp3"] | None = Field(
        None, description="ogg (Opus, as Telegram voice notes), wav or mp3; else from Accept."
    )
    pace: float = Field(1.0, ge=0.5, le=2.0, description="1.0 normal; 2.0 twice as fast.")
    speaker: int | None = Field(None, ge=0, description="Speaker of a multi-speaker voice.")
    stream: bool = Field(False, description="Send audio sentence by sentence as it is made.")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = strip_controls(value)
        if not value.strip():
            raise ValueError("text is empty")
        return value


class SourceOut(BaseModel):
    ref: int = Field(description="The [n] the prompt numbered this passage with.")
    document_id: str
    title: str
    score: float
    text: str = Field("", description="The passage (empty when a stored turn is replayed).")


class TurnAudio(BaseModel):
    format: str
    media_type: str
    base64: str


class TurnOut(BaseModel):
    conversation_id: uuid.UUID
    turn_id: uuid.UUID
    request_id: str
    transcript: str = Field(description="What the user said (or typed).")
    reply: str
    sources: list[SourceOut]
    timings_ms: dict[str, float]
    models: dict[str, str]
    replayed: bool = Field(False, description="True when a retried request id found its turn.")
    interrupted: bool = Field(False, description="Live only: the user talked over the reply.")
    audio: TurnAudio | None = None


class StoredTurn(BaseModel):
    turn_id: uuid.UUID
    request_id: str
    ordinal: int
    transcript: str
    reply: str
    sources: list[dict]
    timings_ms: dict[str, float]
    models: dict[str, str]
    interrupted: bool = Field(
        False, description="The user talked over the reply; reply is the part they heard."
    )
    created_at: datetime


class ConversationOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    turns: list[StoredTurn]

    @classmethod
    def from_rows(cls, conversation: Any, turns: list[Any]) -> ConversationOut:
        return cls(
            id=conversation.id,
            created_at=conversation.created_at,
            turns=[
                StoredTurn(
                    turn_id=t.id,
                    request_id=t.request_id,
                    ordinal=t.ordinal,
                    transcript=t.transcript,
                    reply=t.reply,
                    sources=t.sources,
                    timings_ms=t.timings_ms,
                    models=t.models,
                    interrupted=t.interrupted,
                    created_at=t.created_at,
                )
                for t in turns
            ],
        )
