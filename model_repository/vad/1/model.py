"""Triton glue for ``vad``; the logic is in silero.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from june_backend import (
    artifact_path,
    error_of,
    get_logger,
    mono_audio,
    parse_model_config,
    require_parameter,
    string_parameters,
)
from silero import SAMPLE_RATE, SileroVad, speech_segments

log = get_logger("vad")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        params = string_parameters(config)
        self.vad = SileroVad(artifact_path(args, require_parameter(config, "model")))
        self.rules = {
            "threshold": float(params.get("threshold", "0.5")),
            "min_speech_s": float(params.get("min_speech_s", "0.25")),
            "min_silence_s": float(params.get("min_silence_s", "0.1")),
            "pad_s": float(params.get("pad_s", "0.1")),
        }
        log.info("Silero VAD ready (%s)", self.rules)

    def execute(self, requests: list) -> list:
        """Every clip of the batch steps through the network together."""
        responses: list = [None] * len(requests)
        clips: list[tuple[int, np.ndarray]] = []
        for i, request in enumerate(requests):
            try:
                clips.append((i, mono_audio(pb_utils, request)))
            except Exception as exc:
                responses[i] = pb_utils.InferenceResponse(
                    error=error_of(pb_utils, exc, prefix="vad")
                )
        if clips:
            try:
                probs = self.vad.probabilities([clip for _, clip in clips])
            except Exception as exc:
                log.exception("VAD failed")
                for i, _ in clips:
                    responses[i] = pb_utils.InferenceResponse(
                        error=error_of(pb_utils, exc, prefix="vad")
                    )
                return responses
            for (i, clip), p in zip(clips, probs, strict=True):
                segments = speech_segments(p, duration_s=len(clip) / SAMPLE_RATE, **self.rules)
                array = np.array(segments, dtype=np.float32).reshape(1, -1, 2)
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("SEGMENTS", array)]
                )
        return responses
