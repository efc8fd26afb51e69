"""Triton glue for ``embed_tokenizer``; the logic is in text_tokenizer.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton_python_backend_utils as pb_utils
from june_backend import (
    artifact_path,
    decode_texts,
    error_of,
    get_logger,
    int_parameter,
    parse_model_config,
    require_parameter,
)
from text_tokenizer import BatchTokenizer

log = get_logger("embed_tokenizer")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        self.tokenizer = BatchTokenizer(
            artifact_path(args, require_parameter(config, "tokenizer_file")),
            int_parameter(config, "max_seq_length", 512),
        )
        log.info("loaded tokenizer (max_seq_length=%d)", self.tokenizer.max_seq_length)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                texts = decode_texts(pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy())
                ids, mask = self.tokenizer.encode(texts)
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor("input_ids", ids),
                            pb_utils.Tensor("attention_mask", mask),
                        ]
                    )
                )
            except Exception as exc:  # one bad request must not take the instance down
                log.exception("tokenisation failed")
                responses.append(
                    pb_utils.InferenceResponse(error=error_of(pb_utils, exc, prefix="tokenizer"))
                )
        return responses
