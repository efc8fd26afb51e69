"""A chat request -> the inputs of TensorRT-LLM's tensorrtllm backend.

The chat template, the message checks and the limits are the ones the cpu profile's ``llm``
uses (``chat.py``), so a request is accepted or refused alike on both profiles.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
from chat import ChatTemplate, Sampling, check_sampling
from tokenizers import Tokenizer


class ChatPreprocessor:
    def __init__(self, folder: Path) -> None:
        self.template = ChatTemplate(folder)
        self.defaults = Sampling.load(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        meta = json.loads((folder / "llm.json").read_text(encoding="utf-8"))
        self.eos_ids: list[int] = [int(i) for i in meta["eos_token_ids"]]
        self.pad_id = int(meta["pad_token_id"])
        self.context_length = int(meta.get("context_length") or 0)

    def prompt_ids(self, messages: list[dict], *, enable_thinking: bool | None = None) -> list[int]:
        # The rendered template already holds the special tokens as text.
        prompt = self.template.render(messages, enable_thinking=enable_thinking)
        return self.tokenizer.encode(prompt, add_special_tokens=False).ids

    def stop_words(self, stop: list[str]) -> np.ndarray:
        """TensorRT-LLM's ``stop_words_list`` ``[2, n]``: the token ids of every stop sequence
        end to end, then the end offset of each, padded with -1. The model's other end tokens
        (a chat model may have several) are stop sequences too; ``end_id`` is the first."""
        sequences = [self.tokenizer.encode(s, add_special_tokens=False).ids for s in stop]
        sequences += [[i] for i in self.eos_ids[1:]]
        flat: list[int] = []
        offsets: list[int] = []
        for ids in sequences:
            if ids:
                flat += ids
                offsets.append(len(flat))
        if not flat:
            return np.array([[0], [-1]], dtype=np.int32)
        width = max(len(flat), len(offsets))
        return np.array(
            [flat + [0] * (width - len(flat)), offsets + [-1] * (width - len(offsets))],
            dtype=np.int32,
        )

    def inputs(
        self,
        messages: list[dict],
        *,
        max_tokens: int,
        sampling: Sampling,
        stop: list[str],
        seed: int | None,
        enable_thinking: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """Every input of ``llm_tensorrt_llm``, each with a batch dimension of 1."""
        check_sampling(max_tokens, sampling)
        ids = self.prompt_ids(messages, enable_thinking=enable_thinking)
        if self.context_length and len(ids) + max_tokens > self.context_length:
            raise ValueError(
                f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds "
                f"the context length ({self.context_length})"
            )
        greedy = sampling.temperature == 0.0

        def one(value: object, dtype: type) -> np.ndarray:
            return np.array([[value]], dtype=dtype)

        return {
            "input_ids": np.array([ids], dtype=np.int32),
            "input_lengths": one(len(ids), np.int32),
            "request_output_len": one(max_tokens, np.int32),
            "end_id": one(self.eos_ids[0], np.int32),
            "pad_id": one(self.pad_id, np.int32),
            "stop_words_list": self.stop_words(stop)[None],
            # Greedy is top-k 1 (TensorRT-LLM divides by the temperature, so never 0).
            "temperature": one(1.0 if greedy else sampling.temperature, np.float32),
            # TensorRT-LLM's top_k 0 is no cut, as in Hugging Face.
            "runtime_top_k": one(1 if greedy else sampling.top_k, np.int32),
            "runtime_top_p": one(1.0 if greedy else sampling.top_p, np.float32),
            "repetition_penalty": one(sampling.repetition_penalty, np.float32),
            # Without a seed every sampled request would draw the same numbers.
            "seed": one(secrets.randbits(63) if seed is None else seed, np.uint64),
            "streaming": one(True, np.bool_),
            "return_num_input_tokens": one(True, np.bool_),
            "return_num_output_tokens": one(True, np.bool_),
        }
