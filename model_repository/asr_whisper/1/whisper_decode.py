"""Whisper on ONNX Runtime: encoder, then batched greedy decoding with a KV cache.

Every window of every request in Triton's batch is decoded together: one encoder run, then
one decoder run per generated token for all rows still going (finished rows are dropped
from the batch). The rules follow Hugging Face's greedy ``generate``: prompt
``<|sot|> [<|lang|> <|transcribe|>] <|notimestamps|>``, ``suppress_tokens`` at every step,
``begin_suppress_tokens`` at the first. A window whose no-speech probability is high
and whose tokens are unlikely (Whisper's own rule: > 0.6 and average log-prob < -1), or
whose features are flat (digital silence), gives an empty transcript.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0


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


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class WhisperGreedy:
    def __init__(
        self, folder: Path, *, intra_op_threads: int = 0, max_encoder_batch: int = 4
    ) -> None:
        self.meta = json.loads((folder / "whisper.json").read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        if intra_op_threads > 0:
            options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(
            str(folder / "encoder.onnx"), options, providers=providers
        )
        self.decoder = ort.InferenceSession(
            str(folder / "decoder.onnx"), options, providers=providers
        )
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.max_encoder_batch = max(1, max_encoder_batch)
        m = self.meta
        self.head_dim = m["d_model"] // m["n_heads"]
        self.languages: dict[str, int] = m["languages"]
        self.language_ids = np.array(sorted(self.languages.values()), dtype=np.int64)
        self.id_to_language = {v: k for k, v in self.languages.items()}
        self.suppress = np.array(m["suppress_tokens"], dtype=np.int64)
        self.begin_suppress = np.array(m["begin_suppress_tokens"], dtype=np.int64)

    # --- public -------------------------------------------------------------------------
    def check_language(self, language: str | None) -> None:
        if not language:
            return
        if not self.meta["multilingual"]:
            if language != "en":
                raise ValueError(f"this Whisper model is English-only; got language {language!r}")
        elif language not in self.languages:
            raise ValueError(f"unsupported language {language!r}")

    def transcribe(self, requests: list[tuple[np.ndarray, str | None]]) -> list[Transcript]:
        """``[(mel windows [W, n_mels, frames], language or None), ...]`` -> one transcript each."""
        for _, language in requests:
            self.check_language(language)
        mels = [mel for mel, _ in requests]
        owners = [i for i, mel in enumerate(mels) for _ in range(mel.shape[0])]
        langs = [requests[i][1] for i in owners]
        windows = np.concatenate(mels) if mels else np.zeros((0, 1, 1), np.float32)
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

    def text(self, result: WindowResult) -> str:
        if result.silent:
            return ""
        if result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob < LOGPROB_THRESHOLD:
            return ""
        return self.tokenizer.decode(result.tokens, skip_special_tokens=True).strip()

    # --- decoding -----------------------------------------------------------------------
    def encode(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys, values = [], []
        for start in range(0, len(windows), self.max_encoder_batch):
            k, v = self.encoder.run(None, {"mel": windows[start : start + self.max_encoder_batch]})
            keys.append(k)
            values.append(v)
        return np.concatenate(keys, axis=1), np.concatenate(values, axis=1)

    def _empty_cache(self, batch: int) -> np.ndarray:
        m = self.meta
        return np.zeros((m["n_layers"], batch, m["n_heads"], 0, self.head_dim), np.float32)

    def _step(
        self,
        ids: np.ndarray,
        past_k: np.ndarray,
        past_v: np.ndarray,
        cross_k: np.ndarray,
        cross_v: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, key, value = self.decoder.run(
            None,
            {
                "input_ids": ids,
                "past_key": past_k,
                "past_value": past_v,
                "cross_key": cross_k,
                "cross_value": cross_v,
            },
        )
        return logits, key, value

    def detect_languages(self, cross_k: np.ndarray, cross_v: np.ndarray) -> list[str]:
        n = cross_k.shape[1]
        ids = np.full((n, 1), self.meta["sot"], dtype=np.int64)
        logits = self._step(ids, self._empty_cache(n), self._empty_cache(n), cross_k, cross_v)[0][
            :, 0
        ]
        best = self.language_ids[logits[:, self.language_ids].argmax(axis=-1)]
        return [self.id_to_language[int(t)] for t in best]

    def prompt(self, language: str) -> list[int]:
        m = self.meta
        if m["multilingual"]:
            return [m["sot"], self.languages[language], m["transcribe"], m["no_timestamps"]]
        return [m["sot"], m["no_timestamps"]]

    def decode_windows(
        self, windows: np.ndarray, languages: list[str | None]
    ) -> list[WindowResult]:
        n = len(windows)
        results: list[WindowResult | None] = [None] * n
        silent = [bool(np.ptp(w) < 1e-3) for w in windows]
        for i in range(n):
            if silent[i]:
                results[i] = WindowResult([], languages[i] or "en", 1.0, 0.0, silent=True)
        live = [i for i in range(n) if not silent[i]]
        if live:
            for i, r in zip(
                live, self._greedy(windows[live], [languages[i] for i in live]), strict=True
            ):
                results[i] = r
        return [r for r in results if r is not None]

    def _greedy(self, windows: np.ndarray, languages: list[str | None]) -> list[WindowResult]:
        m = self.meta
        cross_k, cross_v = self.encode(windows)
        n = len(windows)
        if m["multilingual"] and any(lang is None for lang in languages):
            detected = self.detect_languages(cross_k, cross_v)
            languages = [lang or d for lang, d in zip(languages, detected, strict=True)]
        langs = [lang or "en" for lang in languages]
        prompt = np.array([self.prompt(lang) for lang in langs], dtype=np.int64)
        logits, past_k, past_v = self._step(
            prompt, self._empty_cache(n), self._empty_cache(n), cross_k, cross_v
        )
        no_speech = np.exp(_log_softmax(logits[:, 0])[:, m["no_speech"]])
        max_new = m["max_target_positions"] - prompt.shape[1]

        tokens: list[list[int]] = [[] for _ in range(n)]
        logprob = np.zeros(n)
        active = np.arange(n)
        next_logits = logits[:, -1]
        for step in range(max_new):
            scores = next_logits.astype(np.float32, copy=True)
            scores[:, self.suppress] = -np.inf
            if step == 0:
                scores[:, self.begin_suppress] = -np.inf
            chosen = scores.argmax(axis=-1)
            logp = _log_softmax(scores)[np.arange(len(chosen)), chosen]
            keep = []
            for row, (idx, tok) in enumerate(zip(active, chosen, strict=True)):
                logprob[idx] += logp[row]
                if tok == m["eot"]:
                    continue
                tokens[idx].append(int(tok))
                keep.append(row)
            if not keep or step == max_new - 1:
                break
            if len(keep) < len(active):
                sel = np.array(keep)
                active, chosen = active[sel], chosen[sel]
                past_k, past_v = past_k[:, sel], past_v[:, sel]
                cross_k, cross_v = cross_k[:, sel], cross_v[:, sel]
            logits, past_k, past_v = self._step(
                chosen.reshape(-1, 1).astype(np.int64), past_k, past_v, cross_k, cross_v
            )
            next_logits = logits[:, -1]
        return [
            WindowResult(
                tokens=tokens[i],
                language=langs[i],
                no_speech_prob=float(no_speech[i]),
                avg_logprob=float(logprob[i] / (len(tokens[i]) + 1)),
            )
            for i in range(n)
        ]
