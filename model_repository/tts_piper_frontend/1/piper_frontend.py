"""Text -> Piper phoneme ids: June's normaliser, then Piper's own espeak-ng phonemizer.

One row of ids per sentence (espeak-ng finds the sentences), so the voice model runs
each sentence on its own, as Piper does. Pure logic: unit-tested without a server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from piper.phoneme_ids import phonemes_to_ids
from piper.phonemize_espeak import ESPEAK_DATA_DIR, EspeakPhonemizer
from tts_text import TextTooLong, check_request, check_sentence, check_spoken, normalise

__all__ = ["PiperFrontend", "TextTooLong"]


@dataclass(frozen=True)
class PhonemeBatch:
    ids: np.ndarray  # [total] int64, the sentences one after another
    lengths: np.ndarray  # [sentences] int64
    scales: np.ndarray  # [3] float32: noise, length, noise_w
    speaker: np.ndarray  # [1] int64, -1 for single-speaker voices


class PiperFrontend:
    def __init__(self, voice_config: Path, *, max_chars: int = 5000) -> None:
        config = json.loads(voice_config.read_text(encoding="utf-8"))
        if config.get("phoneme_type", "espeak") != "espeak":
            raise ValueError(f"{voice_config}: only espeak phoneme voices are supported")
        self.id_map: dict[str, list[int]] = config["phoneme_id_map"]
        self.espeak_voice: str = config["espeak"]["voice"]
        self.vowel_clusters = config.get("vowel_clusters")
        self.sample_rate = int(config["audio"]["sample_rate"])
        self.num_speakers = int(config.get("num_speakers", 1))
        inference = config.get("inference", {})
        self.noise_scale = float(inference.get("noise_scale", 0.667))
        self.length_scale = float(inference.get("length_scale", 1.0))
        self.noise_w = float(inference.get("noise_w", 0.8))
        self.max_chars = max_chars
        self._phonemizer = EspeakPhonemizer(ESPEAK_DATA_DIR)

    def __call__(self, text: str, *, pace: float = 1.0, speaker: int = 0) -> PhonemeBatch:
        check_request(text, pace, max_chars=self.max_chars)
        if self.num_speakers > 1 and not 0 <= speaker < self.num_speakers:
            raise ValueError(f"SPEAKER must be in [0, {self.num_speakers}), got {speaker}")
        words = normalise(text)
        check_spoken(words, max_chars=2 * self.max_chars)
        rows: list[list[int]] = []
        if any(ch.isalpha() for ch in words):
            for phonemes in self._phonemizer.phonemize(
                self.espeak_voice, words, vowel_clusters=self.vowel_clusters
            ):
                if phonemes:
                    rows.append(phonemes_to_ids(phonemes, self.id_map))
                    check_sentence(len(rows[-1]))
        ids = np.array([i for row in rows for i in row], dtype=np.int64)
        return PhonemeBatch(
            ids=ids,
            lengths=np.array([len(row) for row in rows], dtype=np.int64),
            scales=np.array(
                [self.noise_scale, self.length_scale / pace, self.noise_w], dtype=np.float32
            ),
            speaker=np.array([speaker if self.num_speakers > 1 else -1], dtype=np.int64),
        )
