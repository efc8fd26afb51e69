"""Triton glue for ``embed_encoder`` (CPU profile); the logic is in onnx_encoder.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton_python_backend_utils as pb_utils
from june_backend import (
    artifact_path,
    error_of,
    get_logger,
    int_parameter,
    parse_model_config,
    require_parameter,
)
from onnx_encoder import RaggedBatchEncoder

log = get_logger("embed_encoder")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        self.encoder = RaggedBatchEncoder(
            artifact_path(args, require_parameter(config, "onnx_file")),
            intra_op_threads=int_parameter(config, "intra_op_threads", 0),
        )
        log.info("loaded ONNX encoder (dim=%d)", self.encoder.dim)

    def execute(self, requests: list) -> list:
        try:
            batches = [
                (
                    pb_utils.get_input_tensor_by_name(r, "input_ids").as_numpy(),
                    pb_utils.get_input_tensor_by_name(r, "attention_mask").as_numpy(),
                )
                for r in requests
            ]
            outputs = self.encoder.run(batches)
        except Exception as exc:  # fail the batch, keep the instance serving
            log.exception("encoder failed")
            error = error_of(pb_utils, exc, prefix="encoder")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("sentence_embedding", out)])
            for out in outputs
        ]
