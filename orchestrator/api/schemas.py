"""Request and response bodies of the REST API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator


def _clean_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; other control characters are kept as sent.
    value = value.replace("\x00", "")
    if not value.strip():
        raise ValueError("must contain some non-whitespace text")
    return value


class DocumentIn(BaseModel):
    title: str = Field(min_length=1, max_length=300, examples=["Office hours"])
    text: str = Field(min_length=1, description="Plain text; chunked and embedded on ingest.")
    source: str | None = Field(None, max_length=2000, description="Where the text came from.")

    _clean_title = field_validator("title")(_clean_text)
    _clean_body = field_validator("text")(_clean_text)


class DocumentOut(BaseModel):
    id: uuid.UUID
    title: str
    source: str | None
    n_chars: int
    n_chunks: int
    created_at: datetime


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


class ErrorOut(BaseModel):
    detail: str | list


class TranscriptOut(BaseModel):
    text: str = Field(description="Empty when the audio holds no speech.")
    language: str = Field(description="The language used: forced, or detected.")
    no_speech_prob: float
    duration_s: float
    timings_ms: dict[str, float]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class ChatIn(BaseModel):
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    system: str | None = Field(None, max_length=20_000, description="Prepended; never truncated.")
    max_tokens: int = Field(256, ge=1, le=2048)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: int | None = Field(None, ge=0)
    stream: bool = False

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if value[-1].role != "user":
            raise ValueError("the last message must be from the user")
        if not value[-1].content.strip():
            raise ValueError("the last message is empty")
        return value


class ChatOut(BaseModel):
    text: str
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
        if not value.strip():
            raise ValueError("text is empty")
        return value
