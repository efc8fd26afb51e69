"""Triton glue for ``tts_acoustic`` (CPU profile): the FastPitch ONNX graph, tokens -> mel."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from june_backend import (
    answer_each,
    artifact_path,
    get_logger,
    int_parameter,
    parse_model_config,
    require_parameter,
)
from onnx_graph import OnnxGraph

log = get_logger("tts_acoustic")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        self.graph = OnnxGraph(
            artifact_path(args, require_parameter(config, "onnx_file")),
            intra_op_threads=int_parameter(config, "intra_op_threads", 0),
        )
        self.n_mels = int_parameter(config, "n_mels", 80)
        log.info("FastPitch loaded")

    def execute(self, requests: list) -> list:
        return answer_each(pb_utils, requests, self.mel, prefix="tts", log=log)

    def mel(self, request: object) -> list:
        feeds = {
            name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            for name in ("text", "pitch", "pace")
        }
        if feeds["text"].size == 0:  # nothing speakable: no frames
            spect = np.zeros((1, self.n_mels, 0), dtype=np.float32)
        else:
            spect = self.graph(["spect"], feeds)[0].astype(np.float32, copy=False)
        return [pb_utils.Tensor("spect", spect)]
