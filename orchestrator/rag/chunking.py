"""Split documents into overlapping passages sized for the embedder."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n{2,}")  # noqa: RUF001 - CJK punctuation


def split_sentences(text: str) -> list[str]:
    """Sentences and paragraphs, whitespace-normalised, empty pieces dropped."""
    return [" ".join(p.split()) for p in _SENTENCE_END.split(text) if p and p.strip()]


def chunk_text(text: str, *, max_words: int = 120, overlap_words: int = 20) -> list[str]:
    """Pack whole sentences into chunks of at most ``max_words`` words.

    Consecutive chunks share about ``overlap_words`` trailing words so a fact split across
    a boundary is still retrievable. A single sentence longer than ``max_words`` is cut by
    words.
    """
    if max_words < 1:
        raise ValueError("max_words must be >= 1")
    if not 0 <= overlap_words < max_words:
        raise ValueError("overlap_words must be in [0, max_words)")
    words_of = [s.split() for s in split_sentences(text)]
    pieces: list[list[str]] = []
    for words in words_of:  # cut over-long sentences first
        step = max_words - overlap_words
        if len(words) <= max_words:
            pieces.append(words)
        else:
            pieces.extend(
                words[i : i + max_words] for i in range(0, len(words) - overlap_words, step)
            )

    chunks: list[list[str]] = []
    current: list[str] = []
    for words in pieces:
        if current and len(current) + len(words) > max_words:
            chunks.append(current)
            tail = current[-overlap_words:] if overlap_words else []
            current = tail if len(tail) + len(words) <= max_words else []
        current = current + words
    if current:
        chunks.append(current)
    return [" ".join(c) for c in chunks]
