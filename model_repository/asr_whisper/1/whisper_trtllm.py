"""Whisper on TensorRT-LLM engines (gpu profile), driven from the ``asr_whisper`` Python model.

Each live 30 s window costs two requests to the ``asr_tensorrt_llm`` model, and every
window of every batched request is in flight at once (the engine batches them in flight):

1. detect: prompt ``<|sot|>``, one step, its generation logits -> the language (when the
   caller gave none) and the no-speech probability, read as the cpu runtime reads them;
2. transcribe: the prompt for that language, greedy to ``<|endoftext|>``. Whisper's
   ``suppress_tokens`` are an embedding bias of -1e4; ``min_tokens`` 1 keeps
   ``<|endoftext|>`` from coming first (the cpu runtime's ``begin_suppress_tokens`` also
   holds back a blank, which this does not). The cumulative log-prob gives the average
   log-prob that Whisper's no-speech rule needs.

``Engine`` is the boundary: it sends many requests' tensors at once and returns each one's
output tensors. Inside Triton it is a set of concurrent BLS calls (:class:`TritonEngine`).

TensorRT-LLM's Whisper encoder takes no attention bias, so a short window's padding is not
re-weighted here as the cpu runtime does it (``whisper_decode.padding_key_bias``): on a GPU
the window floor can be 30 s at little cost, or the short-window transcripts differ from
the 30 s window's a little more often.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
from whisper_rules import WhisperRules, WindowResult

SUPPRESSED = -1.0e4  # finite: -inf could turn half-precision logits into NaN

Inputs = dict[str, np.ndarray]
Engine = Callable[[list[Inputs], list[str]], list[dict[str, np.ndarray]]]


class WhisperTrtllm(WhisperRules):
    def __init__(
        self,
        folder: Path,
        engine: Engine,
        *,
        feature_dtype: type = np.float16,
        max_seq_len: int = 0,
    ) -> None:
        """``max_seq_len``: the decoder engine's limit (prompt + new tokens), 0 for none."""
        super().__init__(folder)
        self.engine = engine
        self.feature_dtype = feature_dtype
        positions = self.meta["max_target_positions"]
        self.max_seq_len = min(positions, max_seq_len) if max_seq_len > 0 else positions
        bias = np.zeros(self.meta["vocab_size"], dtype=np.float32)
        bias[self.suppress] = SUPPRESSED
        self.bias = bias

    def window_inputs(self, window: np.ndarray, prompt: list[int], new_tokens: int) -> dict:
        """The tensors of one request for a window ``[n_mels, frames]``, batch dimension 1."""
        frames = window.shape[-1]
        m = self.meta
        return {
            # the engine takes [frames, n_mels]
            "encoder_input_features": window.T[None].astype(self.feature_dtype),
            "encoder_output_lengths": np.array([[frames // 2]], dtype=np.int32),
            "input_lengths": np.array([[frames]], dtype=np.int32),
            "decoder_input_ids": np.array([prompt], dtype=np.int32),
            "request_output_len": np.array([[new_tokens]], dtype=np.int32),
            "end_id": np.array([[m["eot"]]], dtype=np.int32),
            "pad_id": np.array([[m["eot"]]], dtype=np.int32),
        }

    def detect_inputs(self, window: np.ndarray) -> Inputs:
        """One step after ``<|sot|>``, returning its logits."""
        inputs = self.window_inputs(window, [self.meta["sot"]], 1)
        inputs["return_generation_logits"] = np.array([[True]])
        return inputs

    def greedy_inputs(self, window: np.ndarray, prompt: list[int]) -> Inputs:
        inputs = self.window_inputs(window, prompt, self.max_seq_len - len(prompt))
        inputs["embedding_bias"] = self.bias[None]
        inputs["min_tokens"] = np.array([[1]], dtype=np.int32)
        inputs["return_log_probs"] = np.array([[True]])
        return inputs

    def tokens_of(self, out: dict[str, np.ndarray]) -> tuple[list[int], float]:
        """Tokens after the prompt (without ``<|endoftext|>``) and their summed log-prob."""
        ids = out["output_ids"].reshape(-1, out["output_ids"].shape[-1])[0]
        length = int(out["sequence_length"].reshape(-1)[0])
        tokens = [int(t) for t in ids[:length] if t != self.meta["eot"]]
        return tokens, float(out["cum_log_probs"].reshape(-1)[0])

    def decode_live(self, windows: np.ndarray, languages: list[str | None]) -> list[WindowResult]:
        detected = self.engine([self.detect_inputs(w) for w in windows], ["generation_logits"])
        sot_logits = np.stack(
            [
                d["generation_logits"].reshape(-1, d["generation_logits"].shape[-1])[0]
                for d in detected
            ]
        )
        no_speech = self.no_speech_from(sot_logits)
        if self.meta["multilingual"]:
            best = self.languages_from(sot_logits)
            langs = [lang or d for lang, d in zip(languages, best, strict=True)]
        else:
            langs = ["en"] * len(windows)
        outs = self.engine(
            [
                self.greedy_inputs(w, self.prompt(lang))
                for w, lang in zip(windows, langs, strict=True)
            ],
            ["output_ids", "sequence_length", "cum_log_probs"],
        )
        results = []
        for out, lang, p in zip(outs, langs, no_speech, strict=True):
            tokens, logprob = self.tokens_of(out)
            results.append(
                WindowResult(
                    tokens=tokens,
                    language=lang,
                    no_speech_prob=float(p),
                    avg_logprob=logprob / (len(tokens) + 1),
                )
            )
        return results


class TritonEngine:
    """Concurrent BLS requests to the TensorRT-LLM model (non-decoupled: one response each)."""

    def __init__(self, pb: object, model_name: str) -> None:
        self.pb = pb
        self.model_name = model_name

    def __call__(self, batch: list[Inputs], outputs: list[str]) -> list[dict[str, np.ndarray]]:
        return asyncio.run(self._all(batch, outputs))

    async def _all(self, batch: list[Inputs], outputs: list[str]) -> list[dict[str, np.ndarray]]:
        pb = self.pb
        requests = [
            pb.InferenceRequest(  # type: ignore[attr-defined]
                model_name=self.model_name,
                inputs=[pb.Tensor(k, v) for k, v in inputs.items()],  # type: ignore[attr-defined]
                requested_output_names=outputs,
            )
            for inputs in batch
        ]
        responses = await asyncio.gather(*(r.async_exec() for r in requests))
        results = []
        for response in responses:
            if response.has_error():
                raise RuntimeError(f"{self.model_name}: {response.error().message()}")
            results.append(
                {
                    name: pb.get_output_tensor_by_name(response, name).as_numpy()  # type: ignore[attr-defined]
                    for name in outputs
                }
            )
        return results
