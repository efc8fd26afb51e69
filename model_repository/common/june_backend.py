"""Helpers shared by June's Python-backend models (copied beside each model.py at build).

Nothing here imports ``triton_python_backend_utils``: the glue in each model.py does, and
passes plain values in, so this module is unit-tested without a server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def parse_model_config(raw: str | Mapping[str, Any]) -> dict[str, Any]:
    """The model's config as Triton hands it to ``initialize`` (a JSON string)."""
    return dict(json.loads(raw) if isinstance(raw, str) else raw)


def string_parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """``parameters { key: ... value: { string_value: ... } }`` as a plain dict."""
    params = model_config.get("parameters", {}) or {}
    return {key: str(value.get("string_value", "")) for key, value in params.items()}


def require_parameter(model_config: Mapping[str, Any], key: str) -> str:
    value = string_parameters(model_config).get(key, "")
    if not value:
        raise ValueError(f"model {model_config.get('name')!r}: parameter {key!r} is not set")
    return value


def int_parameter(model_config: Mapping[str, Any], key: str, default: int) -> int:
    value = string_parameters(model_config).get(key, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(
            f"model {model_config.get('name')!r}: parameter {key!r}={value!r} is not an integer"
        ) from exc


def run_nicer(nice: int) -> int:
    """Run this model's whole process ``nice`` (Unix nice, 0-19), the threads it already has
    and those it will start, so on a busy CPU the other models' work goes first; the nice
    value it runs at. Linux sets nice per thread, hence the walk over them."""
    if nice <= 0:
        return os.getpriority(os.PRIO_PROCESS, 0)
    tasks = Path("/proc/self/task")
    for tid in sorted(int(t.name) for t in tasks.iterdir()) if tasks.is_dir() else [0]:
        with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    return os.getpriority(os.PRIO_PROCESS, 0)


def artifact_path(args: Mapping[str, str], filename: str) -> Path:
    """Absolute path of ``filename`` in this model's version directory."""
    path = Path(args["model_repository"]) / str(args["model_version"]) / filename
    if not path.is_file():
        raise FileNotFoundError(f"model {args['model_name']!r}: missing artifact {path}")
    return path


def decode_texts(raw: Any) -> list[str]:
    """Triton BYTES tensor (numpy object array, [batch, 1]) -> Python strings.

    Invalid UTF-8 is replaced rather than raised: the orchestrator validates input, and a
    model instance must never die on a malformed byte.
    """
    texts: list[str] = []
    for item in raw.reshape(-1):
        if isinstance(item, bytes | bytearray):
            texts.append(bytes(item).decode("utf-8", errors="replace"))
        else:
            texts.append(str(item))
    return texts


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(f"june.{name}")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger


def scalar_or(tensor: Any, default: float) -> float:
    """The first value of an optional input tensor (``None`` when the client left it out)."""
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)
    return float(value[0]) if value.size else default


def answer_each(
    pb: Any, requests: list, handle: Callable[[Any], list], *, prefix: str, log: logging.Logger
) -> list:
    """One response per request from ``handle(request) -> output tensors``.

    ``pb`` is ``triton_python_backend_utils`` (passed in, so this module imports nothing
    of Triton's). A request that fails gets an error response ``"<prefix>: <reason>"``
    and the others in the batch are still answered: one bad request must not take the
    instance down. Its code says whose fault it was (:func:`error_of`).
    """
    responses = []
    for request in requests:
        try:
            responses.append(pb.InferenceResponse(output_tensors=handle(request)))
        except Exception as exc:
            log.warning("%s: request failed: %s", prefix, exc)
            responses.append(pb.InferenceResponse(error=error_of(pb, exc, prefix=prefix)))
    return responses


def error_of(pb: Any, exc: Exception, *, prefix: str) -> Any:
    """A ``pb_utils.TritonError`` for ``exc``: INVALID_ARG when the request's content was
    refused (a ValueError: the client's fault, HTTP 4xx), INTERNAL otherwise (HTTP 502)."""
    code = pb.TritonError.INVALID_ARG if isinstance(exc, ValueError) else pb.TritonError.INTERNAL
    return pb.TritonError(f"{prefix}: {exc}", code)


def mono_audio(pb: Any, request: Any) -> Any:
    """A request's ``AUDIO`` as 1-D float32 samples; ValueError unless it is ``[1, samples]``
    of finite values."""
    import numpy as np

    audio = pb.get_input_tensor_by_name(request, "AUDIO").as_numpy()
    if audio.ndim != 2 or audio.shape[0] != 1:
        raise ValueError(f"AUDIO must be [1, samples], got {list(audio.shape)}")
    if not np.isfinite(audio).all():
        raise ValueError("AUDIO contains NaN or infinite samples")
    return audio[0].astype(np.float32, copy=False)


def tts_inputs(pb: Any, request: Any) -> tuple[str, float, int]:
    """The TTS interface's inputs: TEXT, and the optional PACE (1.0) and SPEAKER (0)."""
    texts = decode_texts(pb.get_input_tensor_by_name(request, "TEXT").as_numpy())
    pace = scalar_or(pb.get_input_tensor_by_name(request, "PACE"), 1.0)
    speaker = int(scalar_or(pb.get_input_tensor_by_name(request, "SPEAKER"), 0))
    return (texts[0] if texts else ""), pace, speaker
