"""Triton glue for ``tts_frontend``; the logic is in chars_frontend.py and tts_text.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from chars_frontend import CharsFrontend
from june_backend import (
    answer_each,
    artifact_path,
    get_logger,
    int_parameter,
    parse_model_config,
    require_parameter,
    tts_inputs,
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
        return answer_each(pb_utils, requests, self.tokens, prefix="tts", log=log)

    def tokens(self, request: object) -> list:
        text, pace, speaker = tts_inputs(pb_utils, request)
        inputs = self.frontend(text, pace=pace, speaker=speaker)
        rate = np.array([self.frontend.sample_rate], dtype=np.int32)
        return [
            pb_utils.Tensor("text", inputs.text),
            pb_utils.Tensor("pitch", inputs.pitch),
            pb_utils.Tensor("pace", inputs.pace),
            pb_utils.Tensor("SAMPLE_RATE", rate),
        ]
