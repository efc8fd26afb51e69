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
from silero import SAMPLE_RATE, STATE_SIZE, SileroVad, speech_segments

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
        clips: list[tuple[int, np.ndarray, np.ndarray]] = []
        for i, request in enumerate(requests):
            try:
                clips.append((i, mono_audio(pb_utils, request), _state(request)))
            except Exception as exc:
                responses[i] = pb_utils.InferenceResponse(
                    error=error_of(pb_utils, exc, prefix="vad")
                )
        if clips:
            try:
                probs, states = self.vad.step(
                    [clip for _, clip, _ in clips], np.stack([s for _, _, s in clips])
                )
            except Exception as exc:
                log.exception("VAD failed")
                for i, _, _ in clips:
                    responses[i] = pb_utils.InferenceResponse(
                        error=error_of(pb_utils, exc, prefix="vad")
                    )
                return responses
            for (i, clip, _), p, state in zip(clips, probs, states, strict=True):
                segments = speech_segments(p, duration_s=len(clip) / SAMPLE_RATE, **self.rules)
                array = np.array(segments, dtype=np.float32).reshape(1, -1, 2)
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("SEGMENTS", array),
                        pb_utils.Tensor("PROBS", p.reshape(1, -1)),
                        pb_utils.Tensor("NEXT_STATE", state.reshape(1, -1)),
                    ]
                )
        return responses


def _state(request: object) -> np.ndarray:
    """The stream's STATE, or zeros for a clip on its own."""
    tensor = pb_utils.get_input_tensor_by_name(request, "STATE")
    if tensor is None:
        return np.zeros(STATE_SIZE, np.float32)
    state = tensor.as_numpy().astype(np.float32).reshape(-1)
    if state.size != STATE_SIZE or not np.isfinite(state).all():
        raise ValueError(f"STATE must be {STATE_SIZE} finite numbers (a NEXT_STATE)")
    return state
