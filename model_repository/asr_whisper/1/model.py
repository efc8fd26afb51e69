"""Triton glue for ``asr_whisper``; the logic is in whisper_decode.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import triton_python_backend_utils as pb_utils
from june_backend import (
    decode_texts,
    error_of,
    get_logger,
    int_parameter,
    parse_model_config,
    string_parameters,
)
from whisper_rules import WhisperRules

log = get_logger("asr_whisper")


def _language(request: object) -> str | None:
    tensor = pb_utils.get_input_tensor_by_name(request, "LANGUAGE")
    if tensor is None:
        return None
    values = decode_texts(tensor.as_numpy())
    return values[0].strip().lower() or None if values else None


def _runtime(config: dict, folder: Path) -> WhisperRules:
    """ONNX Runtime in this process (cpu), or the TensorRT-LLM engines via BLS (gpu)."""
    params = string_parameters(config)
    if params.get("runtime") == "tensorrt_llm":
        from whisper_trtllm import TritonEngine, WhisperTrtllm

        dtype = np.float32 if params.get("feature_dtype") == "float32" else np.float16
        engine = TritonEngine(pb_utils, params.get("engine_model", "asr_tensorrt_llm"))
        return WhisperTrtllm(
            folder,
            engine,
            feature_dtype=dtype,
            max_seq_len=int_parameter(config, "max_seq_len", 0),
        )
    from whisper_decode import WhisperGreedy

    return WhisperGreedy(folder, intra_op_threads=int_parameter(config, "intra_op_threads", 0))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_model_config(args["model_config"])
        folder = Path(args["model_repository"]) / str(args["model_version"])
        self.whisper = _runtime(config, folder)
        log.info(
            "Whisper ready on %s (%s, %d layers)",
            type(self.whisper).__name__,
            "multilingual" if self.whisper.meta["multilingual"] else "English-only",
            self.whisper.meta["n_layers"],
        )

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        batch: list[tuple[int, np.ndarray, str | None]] = []
        for i, request in enumerate(requests):
            try:
                mel = pb_utils.get_input_tensor_by_name(request, "mel").as_numpy()
                language = _language(request)
                self.whisper.check_language(language)
                batch.append((i, mel[0], language))
            except Exception as exc:
                responses[i] = pb_utils.InferenceResponse(
                    error=error_of(pb_utils, exc, prefix="asr_whisper")
                )
        if batch:
            try:
                results = self.whisper.transcribe([(mel, lang) for _, mel, lang in batch])
            except Exception as exc:  # fail this batch, keep the instance serving
                log.exception("decoding failed")
                for i, _, _ in batch:
                    responses[i] = pb_utils.InferenceResponse(
                        error=error_of(pb_utils, exc, prefix="asr_whisper")
                    )
                return responses
            for (i, _, _), result in zip(batch, results, strict=True):
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(
                            "TRANSCRIPT", np.array([[result.text.encode()]], dtype=np.object_)
                        ),
                        pb_utils.Tensor(
                            "DETECTED_LANGUAGE",
                            np.array([[result.language.encode()]], dtype=np.object_),
                        ),
                        pb_utils.Tensor(
                            "NO_SPEECH", np.array([[result.no_speech_prob]], dtype=np.float32)
                        ),
                    ]
                )
        return responses
