"""Text -> FastPitch token ids: June's normaliser, then NeMo's character tokenizer rules.

The tokenizer's tables (tokens, punctuation, padding) come from the checkpoint via
``tts.json``; the rules follow NeMo's ``BaseCharsTokenizer.encode`` (accents stripped,
lower case, one space between words, unknown characters skipped), and a test checks the
ids against NeMo's own. Pure logic: unit-tested without a server.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tts_text import TextTooLong, check_request, check_sentence, check_spoken, normalise

__all__ = ["CharsFrontend", "TextTooLong"]

# Typographic characters NeMo maps to ASCII before tokenising.
_ASCII = str.maketrans(
    {
        "\u2018": "'",  # left single quotation mark
        "\u2019": "'",  # right single quotation mark
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\u2026": ".",  # ellipsis
    }
)


@dataclass(frozen=True)
class AcousticInputs:
    text: np.ndarray  # [1, T] int64
    pitch: np.ndarray  # [1, T] float32: pitch shift, 0 = as predicted
    pace: np.ndarray  # [1, T] float32


class CharsFrontend:
    def __init__(self, meta_file: Path, *, max_chars: int = 5000) -> None:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        tokenizer = meta["tokenizer"]
        self.tokens: list[str] = tokenizer["tokens"]
        self.ids = {token: i for i, token in enumerate(self.tokens)}
        self.space = self.tokens[tokenizer["space"]]
        self.punct = set(tokenizer["punct"])
        self.pad_with_space = bool(tokenizer["pad_with_space"])
        self.lowercase = bool(tokenizer.get("lowercase", True))
        self.sample_rate = int(meta["sample_rate"])
        self.n_speakers = int(meta.get("n_speakers", 1))
        self.max_chars = max_chars

    def encode(self, text: str) -> list[int]:
        """NeMo's character tokenizer on already-normalised text."""
        text = "".join(
            c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn"
        ).translate(_ASCII)
        if self.lowercase:
            text = text.lower()
        chars: list[str] = []
        for c in text:
            if (
                (c == self.space and chars and chars[-1] != self.space)
                or ((c.isalnum() or c == "'") and c in self.ids)
                or c in self.punct
            ):
                chars.append(c)
        while chars and chars[-1] == self.space:
            chars.pop()
        if not any(c.isalnum() for c in chars):
            return []
        if self.pad_with_space:
            chars = [self.space, *chars, self.space]
        return [self.ids[c] for c in chars]

    def __call__(self, text: str, *, pace: float = 1.0, speaker: int = 0) -> AcousticInputs:
        check_request(text, pace, max_chars=self.max_chars)
        if not 0 <= speaker < self.n_speakers:
            raise ValueError(f"SPEAKER must be in [0, {self.n_speakers}), got {speaker}")
        words = normalise(text)
        check_spoken(words, max_chars=2 * self.max_chars)
        ids = np.array([self.encode(words)], dtype=np.int64)
        check_sentence(ids.shape[1])
        return AcousticInputs(
            text=ids,
            pitch=np.zeros(ids.shape, dtype=np.float32),
            pace=np.full(ids.shape, pace, dtype=np.float32),
        )
