"""Triton glue for ``tts_piper_vits`` (CPU profile); the logic is in vits.py."""

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
from vits import VitsVoice

log = get_logger("tts_piper_vits")


def flat(request: object, name: str) -> np.ndarray:
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        self.voice = VitsVoice(
            artifact_path(args, require_parameter(config, "onnx_file")),
            intra_op_threads=int_parameter(config, "intra_op_threads", 0),
        )
        log.info("Piper voice loaded (multi-speaker: %s)", self.voice.multi_speaker)

    def execute(self, requests: list) -> list:
        return answer_each(pb_utils, requests, self.speak, prefix="tts", log=log)

    def speak(self, request: object) -> list:
        audio = self.voice(
            flat(request, "PHONEME_IDS"),
            flat(request, "SENTENCE_LENGTHS"),
            flat(request, "SCALES"),
            int(flat(request, "SPEAKER_ID")[0]),
        )
        return [pb_utils.Tensor("AUDIO", audio)]
