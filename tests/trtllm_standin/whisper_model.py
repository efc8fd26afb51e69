"""Plays TensorRT-LLM's tensorrtllm backend for Whisper (``asr_tensorrt_llm``) in tests.

Like model.py for the LLM: the gpu profile's ``asr`` pipeline cannot load here (the backend
needs a GPU), so the tests swap this Python model in, keeping the config, and the real
``asr_whisper`` BLS model drives it. It follows the backend's encoder-decoder contract for
what June sends: ``encoder_input_features`` ``[frames, n_mels]``, ``decoder_input_ids`` as
the prompt, greedy decoding for up to ``request_output_len`` tokens with ``embedding_bias``
added to the logits and ``end_id`` barred for the first ``min_tokens``; it returns the new
tokens (``exclude_input_in_output``), their count, the summed log-prob and, when asked, the
raw logits of each step. The numbers come from the cpu export's ONNX graphs, encoded as the
cpu runtime encodes them, padding bias included (``whisper_decode.padding_key_bias``), so
that the transcripts can be compared with the cpu profile's. The real TensorRT-LLM encoder
takes no such bias: on short windows its transcripts may differ where the cpu profile's do
not (README, "Adaptive Whisper windows").
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from whisper_decode import WhisperGreedy
from whisper_rules import log_softmax


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        folder = Path(args["model_repository"]) / str(args["model_version"]) / "standin"
        self.whisper = WhisperGreedy(folder)

    def execute(self, requests: list) -> list:
        return [self.run(request) for request in requests]

    def run(self, request: object) -> object:
        def value(name: str) -> np.ndarray | None:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        w = self.whisper
        features = value("encoder_input_features")
        mel = features.reshape(features.shape[-2:]).T[None].astype(np.float32)
        cross_k, cross_v = w.encode(mel)
        prompt = value("decoder_input_ids").reshape(1, -1).astype(np.int64)
        budget = int(value("request_output_len").reshape(-1)[0])
        end = int(value("end_id").reshape(-1)[0])
        bias = value("embedding_bias")
        min_tokens = value("min_tokens")
        min_tokens = 0 if min_tokens is None else int(min_tokens.reshape(-1)[0])

        logits, past_k, past_v = w._step(
            prompt, w._empty_cache(1), w._empty_cache(1), cross_k, cross_v
        )
        tokens: list[int] = []
        steps: list[np.ndarray] = []
        total = 0.0
        for step in range(budget):
            raw = logits[0, -1].astype(np.float32)
            steps.append(raw)
            scores = raw + (bias.reshape(-1) if bias is not None else 0.0)
            if step < min_tokens:
                scores[end] = -np.inf
            token = int(scores.argmax())
            total += float(log_softmax(scores)[token])
            if token == end:
                break
            tokens.append(token)
            if step == budget - 1:
                break
            logits, past_k, past_v = w._step(
                np.array([[token]], dtype=np.int64), past_k, past_v, cross_k, cross_v
            )
        ids = np.array([[tokens or [end]]], dtype=np.int32)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("output_ids", ids),
                pb_utils.Tensor("sequence_length", np.array([[len(tokens)]], dtype=np.int32)),
                pb_utils.Tensor("cum_log_probs", np.array([[total]], dtype=np.float32)),
                pb_utils.Tensor("generation_logits", np.stack(steps)[None, None]),
            ]
        )
