"""Triton glue for ``tts_piper_frontend``; the logic is in piper_frontend.py and tts_text.py."""

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
    tts_inputs,
)
from piper_frontend import PiperFrontend

log = get_logger("tts_piper_frontend")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        self.frontend = PiperFrontend(
            artifact_path(args, require_parameter(config, "voice_config")),
            max_chars=int_parameter(config, "max_chars", 5000),
        )
        log.info("Piper frontend ready (espeak voice %s)", self.frontend.espeak_voice)

    def execute(self, requests: list) -> list:
        return answer_each(pb_utils, requests, self.phonemes, prefix="tts", log=log)

    def phonemes(self, request: object) -> list:
        text, pace, speaker = tts_inputs(pb_utils, request)
        batch = self.frontend(text, pace=pace, speaker=speaker)
        rate = np.array([self.frontend.sample_rate], dtype=np.int32)
        return [
            pb_utils.Tensor("PHONEME_IDS", batch.ids),
            pb_utils.Tensor("SENTENCE_LENGTHS", batch.lengths),
            pb_utils.Tensor("SCALES", batch.scales),
            pb_utils.Tensor("SPEAKER_ID", batch.speaker),
            pb_utils.Tensor("SAMPLE_RATE", rate),
        ]
