"""Triton glue for ``asr_features``; the logic is in log_mel.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from june_backend import (
    answer_each,
    artifact_path,
    get_logger,
    mono_audio,
    parse_model_config,
    require_parameter,
    string_parameters,
)
from log_mel import LogMel

log = get_logger("asr_features")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        meta = json.loads(
            artifact_path(args, require_parameter(config, "whisper_meta")).read_text(
                encoding="utf-8"
            )
        )
        self.features = LogMel(
            np.load(artifact_path(args, require_parameter(config, "mel_filters"))),
            n_fft=meta["n_fft"],
            hop_length=meta["hop_length"],
            sample_rate=meta["sample_rate"],
            chunk_seconds=meta["chunk_seconds"],
            window_floor_s=float(string_parameters(config).get("window_floor_s", "30")),
            window_margin_s=float(string_parameters(config).get("window_margin_s", "0")),
        )
        log.info(
            "log-mel ready (%d mel bins, windows %s)",
            self.features.n_mels,
            f"from {self.features.window_floor_s} s + {self.features.window_margin_s} s margin"
            if self.features.adaptive
            else "of 30 s",
        )

    def execute(self, requests: list) -> list:
        return answer_each(pb_utils, requests, self.mel, prefix="asr_features", log=log)

    def mel(self, request: object) -> list:
        return [pb_utils.Tensor("mel", self.features(mono_audio(pb_utils, request))[None])]
