"""Triton glue for ``tts_piper_vits`` and ``tts_piper_vits_stream`` (CPU profile): one code,
two configs. The plain model answers each request with its whole AUDIO; the decoupled one
sends the first sentence's first ``first_frames`` frames as a response of their own, then
a response per rest of each sentence, then an empty final one. The logic is in vits.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from june_backend import (
    answer_each,
    artifact_path,
    error_of,
    get_logger,
    int_parameter,
    parse_model_config,
    require_parameter,
)
from vits import VitsVoice

log = get_logger("tts_piper_vits")
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def flat(request: object, name: str) -> np.ndarray:
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)


def inputs(request: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    return (
        flat(request, "PHONEME_IDS"),
        flat(request, "SENTENCE_LENGTHS"),
        flat(request, "SCALES"),
        int(flat(request, "SPEAKER_ID")[0]),
    )


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.first_frames = int_parameter(config, "first_frames", 24)
        self.voice = VitsVoice(
            artifact_path(args, require_parameter(config, "front_file")),
            artifact_path(args, require_parameter(config, "decoder_file")),
            gain=float(require_parameter(config, "gain")),
            intra_op_threads=int_parameter(config, "intra_op_threads", 0),
        )
        log.info(
            "Piper voice loaded (multi-speaker: %s, gain %.3f, %s)",
            self.voice.multi_speaker,
            self.voice.gain,
            f"streamed, first piece {self.first_frames} frames" if self.decoupled else "whole",
        )

    def execute(self, requests: list) -> list | None:
        if not self.decoupled:
            return answer_each(pb_utils, requests, self.speak, prefix="tts", log=log)
        for request in requests:
            self.stream(request)
        return None

    def speak(self, request: object) -> list:
        return [pb_utils.Tensor("AUDIO", self.voice(*inputs(request)))]

    def stream(self, request: object) -> None:
        """Each piece as soon as it is decoded; a client that left stops the decoding."""
        sender = request.get_response_sender()
        try:
            rate = flat(request, "SAMPLE_RATE").astype(np.int32)
            pieces = self.voice.stream(*inputs(request), first_frames=self.first_frames)
            for piece in pieces:
                if request.is_cancelled():
                    break
                sender.send(
                    pb_utils.InferenceResponse(
                        [pb_utils.Tensor("AUDIO", piece), pb_utils.Tensor("SAMPLE_RATE", rate)]
                    )
                )
            sender.send(flags=FINAL)
        except Exception as exc:  # a bad request never stops the instance
            log.warning("tts: request failed: %s", exc)
            error = pb_utils.InferenceResponse(error=error_of(pb_utils, exc, prefix="tts"))
            sender.send(error, flags=FINAL)
