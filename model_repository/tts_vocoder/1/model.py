"""Triton glue for ``tts_vocoder`` (CPU profile): the HiFi-GAN ONNX graph, mel -> waveform."""

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

log = get_logger("tts_vocoder")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        self.graph = OnnxGraph(
            artifact_path(args, require_parameter(config, "onnx_file")),
            intra_op_threads=int_parameter(config, "intra_op_threads", 0),
        )
        log.info("HiFi-GAN loaded")

    def execute(self, requests: list) -> list:
        return answer_each(pb_utils, requests, self.waveform, prefix="tts", log=log)

    def waveform(self, request: object) -> list:
        spec = pb_utils.get_input_tensor_by_name(request, "spec").as_numpy()
        if spec.shape[-1] == 0:  # nothing speakable: no samples
            audio = np.zeros(0, dtype=np.float32)
        else:
            audio = self.graph(["audio"], {"spec": spec})[0].reshape(-1)
            audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
        return [pb_utils.Tensor("AUDIO", audio)]
