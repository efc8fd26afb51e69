"""Triton glue for ``tts_piper_vits`` (CPU profile); the logic is in vits.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from june_backend import (
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
        responses = []
        for request in requests:
            try:
                audio = self.voice(
                    flat(request, "PHONEME_IDS"),
                    flat(request, "SENTENCE_LENGTHS"),
                    flat(request, "SCALES"),
                    int(flat(request, "SPEAKER_ID")[0]),
                )
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("AUDIO", audio)])
                )
            except Exception as exc:  # one bad request must not take the instance down
                log.warning("voice failed: %s", exc)
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"tts: {exc}"))
                )
        return responses
