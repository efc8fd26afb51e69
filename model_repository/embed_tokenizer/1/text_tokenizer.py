"""Tokenisation for the embedder: strings -> padded ``input_ids`` / ``attention_mask``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


class BatchTokenizer:
    """A fast tokenizer that truncates to the encoder's limit and pads within a request."""

    def __init__(self, tokenizer_file: Path, max_seq_length: int) -> None:
        if max_seq_length < 2:
            raise ValueError(f"max_seq_length must be >= 2, got {max_seq_length}")
        self._tok = Tokenizer.from_file(str(tokenizer_file))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_seq_length)
        self.max_seq_length = max_seq_length

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, both int64 ``[len(texts), longest]``."""
        if not texts:
            return np.zeros((0, 0), np.int64), np.zeros((0, 0), np.int64)
        encodings = self._tok.encode_batch(texts)
        longest = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), longest), dtype=np.int64)
        mask = np.zeros((len(texts), longest), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
        return ids, mask
