"""Triton glue for ``tts_frontend``; the logic is in chars_frontend.py and tts_text.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from chars_frontend import CharsFrontend
from june_backend import (
    artifact_path,
    decode_texts,
    get_logger,
    int_parameter,
    parse_model_config,
    require_parameter,
    scalar_or,
)

log = get_logger("tts_frontend")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        self.frontend = CharsFrontend(
            artifact_path(args, require_parameter(config, "tts_meta")),
            max_chars=int_parameter(config, "max_chars", 5000),
        )
        log.info("FastPitch frontend ready (%d tokens)", len(self.frontend.tokens))

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                text = decode_texts(pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy())
                inputs = self.frontend(
                    text[0] if text else "",
                    pace=scalar_or(pb_utils.get_input_tensor_by_name(request, "PACE"), 1.0),
                    speaker=int(
                        scalar_or(pb_utils.get_input_tensor_by_name(request, "SPEAKER"), 0)
                    ),
                )
                outputs = [
                    pb_utils.Tensor("text", inputs.text),
                    pb_utils.Tensor("pitch", inputs.pitch),
                    pb_utils.Tensor("pace", inputs.pace),
                    pb_utils.Tensor(
                        "SAMPLE_RATE", np.array([self.frontend.sample_rate], dtype=np.int32)
                    ),
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as exc:  # one bad request must not take the instance down
                log.warning("frontend failed: %s", exc)
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"tts: {exc}"))
                )
        return responses
