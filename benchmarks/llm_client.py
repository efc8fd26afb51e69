"""A small streaming client for the decoupled ``llm`` model (benchmarks and tests)."""

from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient


@dataclass
class Streamed:
    deltas: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # seconds since the request was sent
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    error: str = ""
    done_at: float = 0.0

    @property
    def text(self) -> str:
        return "".join(self.deltas)


def stream_chat(
    url: str,
    messages: list[dict],
    *,
    max_tokens: int = 32,
    stop: list[str] | None = None,
    temperature: float | None = None,
    repetition_penalty: float | None = None,
    enable_thinking: bool | None = None,
    cancel_after_deltas: int | None = None,
    timeout_s: float = 120,
) -> Streamed:
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    inputs = []
    for name, dtype, value in (
        ("MESSAGES", "BYTES", np.array([json.dumps(messages).encode()], dtype=np.object_)),
        ("MAX_TOKENS", "INT32", np.array([max_tokens], dtype=np.int32)),
    ):
        tensor = grpcclient.InferInput(name, list(value.shape), dtype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    if stop:
        tensor = grpcclient.InferInput("STOP", [len(stop)], "BYTES")
        tensor.set_data_from_numpy(np.array([s.encode() for s in stop], dtype=np.object_))
        inputs.append(tensor)
    for name, dtype, value in (  # left out: the served model's defaults
        ("TEMPERATURE", "FP32", temperature),
        ("REPETITION_PENALTY", "FP32", repetition_penalty),
        ("ENABLE_THINKING", "BOOL", enable_thinking),
    ):
        if value is not None:
            tensor = grpcclient.InferInput(name, [1], dtype)
            numpy_type = np.bool_ if dtype == "BOOL" else np.float32
            tensor.set_data_from_numpy(np.array([value], dtype=numpy_type))
            inputs.append(tensor)
    out = Streamed()
    start = time.perf_counter()
    client.async_stream_infer("llm", inputs)
    try:
        while True:
            result, error = results.get(timeout=timeout_s)
            if error is not None:
                out.error = str(error)
                break
            out.token_ids.extend(int(t) for t in result.as_numpy("TOKEN_IDS"))
            text = result.as_numpy("TEXT")[0].decode()
            if text:
                out.deltas.append(text)
                out.arrivals.append(time.perf_counter() - start)
            reason = result.as_numpy("FINISH_REASON")[0].decode()
            if reason:
                out.finish_reason = reason
                out.prompt_tokens = int(result.as_numpy("PROMPT_TOKENS")[0])
                out.completion_tokens = int(result.as_numpy("COMPLETION_TOKENS")[0])
                cached = result.as_numpy("CACHED_TOKENS")
                out.cached_tokens = int(cached[0]) if cached is not None else 0
                break
            if cancel_after_deltas is not None and len(out.deltas) >= cancel_after_deltas:
                client.stop_stream(cancel_requests=True)
                out.finish_reason = "client-cancelled"
                break
    finally:
        out.done_at = time.perf_counter() - start
        client.stop_stream()
        client.close()
    return out
