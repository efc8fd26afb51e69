"""Whisper's decoding rules, whatever runs the graphs (ONNX Runtime on cpu, TensorRT-LLM on gpu).

The prompt ``<|sot|> [<|lang|> <|transcribe|>] <|notimestamps|>``; the language and the
no-speech probability read from the logits after ``<|sot|>``; a window whose no-speech
probability is high and whose tokens are unlikely (Whisper's own rule: > 0.6 and average
log-prob < -1), or whose features are flat (digital silence), gives an empty transcript;
the windows of one request joined in order.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
# Whisper's own guard against its loops ("you you you ..."): text that compresses better
# than this is a repetition the decoder fell into, not speech.
COMPRESSION_RATIO_THRESHOLD = 2.4


@dataclass
class WindowResult:
    tokens: list[int]
    language: str
    no_speech_prob: float
    avg_logprob: float
    silent: bool = False


@dataclass
class Transcript:
    text: str
    language: str
    no_speech_prob: float


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def is_silent(window: np.ndarray) -> bool:
    return bool(np.ptp(window) < 1e-3)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class WhisperRules:
    def __init__(self, folder: Path) -> None:
        self.meta = json.loads((folder / "whisper.json").read_text(encoding="utf-8"))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        m = self.meta
        self.languages: dict[str, int] = m["languages"]
        self.language_ids = np.array(sorted(self.languages.values()), dtype=np.int64)
        self.id_to_language = {v: k for k, v in self.languages.items()}
        self.suppress = np.array(m["suppress_tokens"], dtype=np.int64)
        self.begin_suppress = np.array(m["begin_suppress_tokens"], dtype=np.int64)

    def check_language(self, language: str | None) -> None:
        if not language:
            return
        if not self.meta["multilingual"]:
            if language != "en":
                raise ValueError(f"this Whisper model is English-only; got language {language!r}")
        elif language not in self.languages:
            raise ValueError(f"unsupported language {language!r}")

    def prompt(self, language: str) -> list[int]:
        m = self.meta
        if m["multilingual"]:
            return [m["sot"], self.languages[language], m["transcribe"], m["no_timestamps"]]
        return [m["sot"], m["no_timestamps"]]

    def languages_from(self, sot_logits: np.ndarray) -> list[str]:
        """``[n, vocab]`` logits after ``<|sot|>`` -> the likeliest language of each row."""
        best = self.language_ids[sot_logits[:, self.language_ids].argmax(axis=-1)]
        return [self.id_to_language[int(t)] for t in best]

    def no_speech_from(self, sot_logits: np.ndarray) -> np.ndarray:
        return np.exp(log_softmax(sot_logits.astype(np.float32))[:, self.meta["no_speech"]])

    def text(self, result: WindowResult) -> str:
        if result.silent:
            return ""
        if result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob < LOGPROB_THRESHOLD:
            return ""
        text = self.tokenizer.decode(result.tokens, skip_special_tokens=True).strip()
        if compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
            return ""
        return text

    def transcribe(self, requests: list[tuple[np.ndarray, str | None]]) -> list[Transcript]:
        """``[(mel windows [W, n_mels, frames], language or None), ...]`` -> one transcript each.

        Every window of every request is decoded together by :meth:`decode_windows` (those of
        the same length in one batch).
        """
        for _, language in requests:
            self.check_language(language)
        windows = [window for mel, _ in requests for window in mel]
        owners = [i for i, (mel, _) in enumerate(requests) for _ in range(mel.shape[0])]
        langs = [requests[i][1] for i in owners]
        results = self.decode_windows(windows, langs)
        out = []
        for i, (_, language) in enumerate(requests):
            mine = [r for r, o in zip(results, owners, strict=True) if o == i]
            texts = [self.text(r) for r in mine]
            spoken = [r for r, t in zip(mine, texts, strict=True) if t]
            detected = language or (spoken[0].language if spoken else "")
            out.append(
                Transcript(
                    text=" ".join(t for t in texts if t),
                    language=detected if self.meta["multilingual"] else "en",  # "" if unknown
                    no_speech_prob=float(min((r.no_speech_prob for r in mine), default=1.0)),
                )
            )
        return out

    def decode_windows(
        self, windows: list[np.ndarray], languages: list[str | None]
    ) -> list[WindowResult]:
        """Silent windows are answered here; the rest go to :meth:`decode_live`, one call per
        window length (adaptive windows come in a few sizes; each size batches together)."""
        n = len(windows)
        results: list[WindowResult | None] = [None] * n
        by_length: dict[int, list[int]] = {}
        for i in range(n):
            if is_silent(windows[i]):
                results[i] = WindowResult([], languages[i] or "en", 1.0, 0.0, silent=True)
            else:
                by_length.setdefault(int(windows[i].shape[-1]), []).append(i)
        for live in by_length.values():
            decoded = self.decode_live(
                np.stack([windows[i] for i in live]), [languages[i] for i in live]
            )
            for i, r in zip(live, decoded, strict=True):
                results[i] = r
        return [r for r in results if r is not None]

    def decode_live(self, windows: np.ndarray, languages: list[str | None]) -> list[WindowResult]:
        raise NotImplementedError
