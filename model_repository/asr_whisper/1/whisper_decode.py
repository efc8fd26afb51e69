"""Whisper on ONNX Runtime: encoder, then batched greedy decoding with a KV cache.

Every window of every request in Triton's batch is decoded together: one encoder run, then
one decoder run per generated token for all rows still going (finished rows are dropped
from the batch). The decoder takes each layer's caches as inputs of their own; the
encoder's stacked cross-attention K/V are handed over layer by layer as numpy views, so
no step copies them. The rules follow Hugging Face's greedy ``generate`` (whisper_rules.py):
``suppress_tokens`` at every step, ``begin_suppress_tokens`` at the first.

A window shorter than 30 s gets a self-attention key bias on its padding
(:func:`padding_key_bias`), so that its speech is encoded as the 30 s window encodes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx_graph import cpu_session_options
from whisper_rules import WhisperRules, WindowResult, log_softmax

Cache = list[np.ndarray]  # a layer's keys or values each, [B, H, T, Dh]


# Encoder positions (20 ms each) right after the speech that keep their own weight.
PADDING_GUARD = 20


def padding_key_bias(
    windows: np.ndarray, full_positions: int, guard: int = PADDING_GUARD
) -> np.ndarray:
    """``[B, n_mels, F]`` log-mel windows -> ``[B, F/2]`` encoder self-attention key bias.

    Whisper was trained on 30 s windows: a 3 s question is followed by 27 s of padding, and
    every self-attention query of the encoder spreads part of its weight over those 1,350
    padding keys. A 10 s window keeps 350 of them, so the speech frames' queries weigh the
    padding less and the speech more, and the transcript of a short clip changes now and
    then (in either direction). Adding ``log(padding in 30 s / padding here)`` to the
    padding keys' logits gives the padding the total weight it has in the 30 s window, as if
    each kept padding key stood for the ones cut off.

    Only the far padding is alike, though: the ``guard`` positions right after the speech
    still carry its context (through the convolutions and attention) and keep their own
    weight. Weighting them up too made transcripts worse more often than better. On 180
    short spoken questions, a 10 s window with this bias (0.4 s guard) gave 27 transcripts
    that differ from the 30 s window's (10 worse, 12 better) where it gave 49 without
    (21 worse, 24 better), at the same speed.

    Padding is the run of frames at the end of a window where every mel bin sits at the
    window's floor (``max - 8``, what zeros give); the encoder halves the frames (its second
    convolution has stride 2) and each of its positions sees three mel frames, so speech
    covers ``ceil(frames / 2) + 1`` positions. A 30 s window, or one with no far padding,
    gets zeros: Whisper unchanged.
    """
    batch, _, frames = windows.shape
    positions = frames // 2
    bias = np.zeros((batch, positions), np.float32)
    if positions >= full_positions:
        return bias
    floor = windows.min(axis=(1, 2), keepdims=True)[:, 0]  # [B, 1]
    live = (windows > floor[:, None] + 1e-6).any(axis=1)  # [B, F]: a frame above the floor
    for row in range(batch):
        heard = np.flatnonzero(live[row])
        speech = (int(heard[-1]) + 2) // 2 + 1 if len(heard) else 0
        far = speech + guard
        if far < positions:
            bias[row, far:] = np.log((full_positions - far) / (positions - far))
    return bias


class WhisperGreedy(WhisperRules):
    def __init__(
        self,
        folder: Path,
        *,
        intra_op_threads: int = 0,
        max_encoder_batch: int = 4,
    ) -> None:
        """Both graphs stop their threads spinning when a run returns: with a pool each
        left spinning, the idle one took a core from the other (see
        :func:`onnx_graph.cpu_session_options`)."""
        super().__init__(folder)
        options = cpu_session_options(intra_op_threads)
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(
            str(folder / "encoder.onnx"), options, providers=providers
        )
        self.decoder = ort.InferenceSession(
            str(folder / "decoder.onnx"), options, providers=providers
        )
        self.max_encoder_batch = max(1, max_encoder_batch)
        m = self.meta
        self.head_dim = m["d_model"] // m["n_heads"]
        self.n_layers = int(m["n_layers"])
        self.inputs = ["input_ids"] + [
            f"{name}.{i}"
            for name in ("past_key", "past_value", "cross_key", "cross_value")
            for i in range(self.n_layers)
        ]
        if {i.name for i in self.decoder.get_inputs()} != set(self.inputs):
            raise ValueError(
                f"{folder / 'decoder.onnx'} does not take a cache per layer (an export older "
                "than exporter version 5); export Whisper again with `june export whisper`"
            )
        if {i.name for i in self.encoder.get_inputs()} != {"mel", "key_bias"}:
            raise ValueError(
                f"{folder / 'encoder.onnx'} does not take a key bias (an export older than "
                "exporter version 6); export Whisper again with `june export whisper`"
            )
        self.full_positions = int(m["n_frames"]) // 2

    # --- decoding -----------------------------------------------------------------------
    def encode(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys, values = [], []
        bias = padding_key_bias(windows, self.full_positions)
        for start in range(0, len(windows), self.max_encoder_batch):
            part = slice(start, start + self.max_encoder_batch)
            k, v = self.encoder.run(None, {"mel": windows[part], "key_bias": bias[part]})
            keys.append(k)
            values.append(v)
        return np.concatenate(keys, axis=1), np.concatenate(values, axis=1)

    def _empty_cache(self, batch: int) -> Cache:
        empty = np.zeros((batch, self.meta["n_heads"], 0, self.head_dim), np.float32)
        return [empty] * self.n_layers

    def _step(
        self,
        ids: np.ndarray,
        past_k: Cache,
        past_v: Cache,
        cross_k: np.ndarray,
        cross_v: np.ndarray,
    ) -> tuple[np.ndarray, Cache, Cache]:
        """One decoder run. ``cross_k``/``cross_v`` are the encoder's ``[L, B, ...]``."""
        n = self.n_layers
        values = [ids, *past_k, *past_v, *cross_k, *cross_v]
        out = self.decoder.run(None, dict(zip(self.inputs, values, strict=True)))
        return out[0], out[1 : 1 + n], out[1 + n :]

    def decode_live(self, windows: np.ndarray, languages: list[str | None]) -> list[WindowResult]:
        m = self.meta
        cross_k, cross_v = self.encode(windows)
        n = len(windows)
        if m["multilingual"] and any(lang is None for lang in languages):
            sot = np.full((n, 1), m["sot"], dtype=np.int64)
            empty_k, empty_v = self._empty_cache(n), self._empty_cache(n)
            detected = self.languages_from(
                self._step(sot, empty_k, empty_v, cross_k, cross_v)[0][:, 0]
            )
            languages = [lang or d for lang, d in zip(languages, detected, strict=True)]
        langs = [lang or "en" for lang in languages]
        prompt = np.array([self.prompt(lang) for lang in langs], dtype=np.int64)
        logits, past_k, past_v = self._step(
            prompt, self._empty_cache(n), self._empty_cache(n), cross_k, cross_v
        )
        no_speech = self.no_speech_from(logits[:, 0])
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
            logp = log_softmax(scores)[np.arange(len(chosen)), chosen]
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
                past_k, past_v = [p[sel] for p in past_k], [p[sel] for p in past_v]
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
