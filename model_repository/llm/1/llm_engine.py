"""Chat generation on ONNX Runtime GenAI with continuous batching, streaming deltas.

One engine thread owns the ``og.Engine``: new requests join the running batch between
steps, every step emits one token per active request, and a request leaves as soon as it
finishes, stops, or its client goes away. Messages are rendered with the model's own chat
template. Stop strings are matched on the decoded text, so a stop string split across
tokens is still caught and never sent.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
from chat import ChatTemplate, Sampling

log = logging.getLogger("june.llm")

CANCEL_CHECK_S = 0.05

FINISH = {
    "EOS": "stop",
    "STOP_STRING": "stop",
    "MAX_GENERATED_TOKENS": "length",
    "MAX_SESSION_TOKENS": "length",
    "CANCELLED": "cancelled",
    "FAILED": "error",
}


@dataclass
class Job:
    """One chat completion. ``emit(delta, final)`` is called from the engine thread."""

    prompt_ids: np.ndarray
    max_tokens: int
    sampling: Sampling = field(default_factory=Sampling)
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    emit: Callable[[str, list[int], dict | None], None] = lambda delta, ids, final: None
    is_cancelled: Callable[[], bool] = lambda: False
    # engine-thread state
    text: str = ""
    sent: int = 0
    tokens: int = 0
    pending_ids: list[int] = field(default_factory=list)

    def send(self, delta: str, final: dict | None = None) -> None:
        ids, self.pending_ids = self.pending_ids, []
        self.emit(delta, ids, final)


def decoder_threads(requested: int) -> int:
    """Threads for the decoder's ONNX Runtime session: ``requested``, or (0) every CPU this
    process may run on. Left unset, ONNX Runtime GenAI ran the decoder on one of two cores
    (benchmarks/llm.py: 0.87x llama.cpp then, 1.04-1.21x with both cores named)."""
    return requested if requested > 0 else max(1, len(os.sched_getaffinity(0)))


class ContinuousBatcher:
    def __init__(self, folder: Path, *, intra_op_threads: int = 0) -> None:
        self.folder = folder
        self.threads = decoder_threads(intra_op_threads)
        self.template = ChatTemplate(folder)
        self.defaults = Sampling.load(folder)
        genai_config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        self.context_length = int(genai_config["model"]["context_length"])
        self.vocab_size = int(genai_config["model"].get("vocab_size") or 0)
        self.capacity = 0
        engine_config = genai_config.get("engine", {})
        # Per-request seeds (and engine-side stop strings) need the paged-attention engine.
        self.supports_seed = isinstance(engine_config.get("dynamic_batching"), dict)
        self._incoming: queue.Queue[Job | None] = queue.Queue()  # None wakes the thread to stop
        self._active: dict[int, tuple[og.Request, int, Job, og.TokenizerStream]] = {}
        self._stop = threading.Event()
        self._cancel_checked = 0.0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # og.Model and og.Engine must be created and driven by one thread: the engine thread.
        self._thread = threading.Thread(target=self._run, name="llm-engine", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=120)
        if self._error is not None:
            raise RuntimeError(f"LLM engine failed to start: {self._error}")

    # --- called from Triton's thread ----------------------------------------------------
    def encode_chat(
        self, messages: list[dict], *, enable_thinking: bool | None = None
    ) -> np.ndarray:
        prompt = self.template.render(messages, enable_thinking=enable_thinking)
        return np.asarray(self.tokenizer.encode(prompt), dtype=np.int32)

    def submit(self, job: Job) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the LLM engine is not running")
        if len(job.prompt_ids) + job.max_tokens > self.context_length:
            raise ValueError(
                f"prompt ({len(job.prompt_ids)} tokens) + max_tokens ({job.max_tokens}) exceeds "
                f"the context length ({self.context_length})"
            )
        self._incoming.put(job)

    def close(self) -> None:
        self._stop.set()
        self._incoming.put(None)
        self._thread.join(timeout=10)

    # --- the engine thread --------------------------------------------------------------
    def _start(self, job: Job) -> None:
        request = self.engine.create_request()
        options = og.TurnOptions(request)
        options.set_max_generated_tokens(job.max_tokens)
        sampling = job.sampling
        sample = sampling.temperature > 0
        options.set_do_sample(sample)
        options.set_repetition_penalty(sampling.repetition_penalty)
        if sample:
            options.set_temperature(sampling.temperature)
            options.set_top_p(sampling.top_p)
            # top_k 0 is no cut (Hugging Face's meaning): every token of the vocabulary.
            options.set_top_k(sampling.top_k or self.vocab_size or 1 << 20)
        if job.seed is not None:
            options.set_seed(job.seed)
        turn = request.begin_turn(job.prompt_ids, options)
        self._active[id(request)] = (request, turn, job, self.tokenizer.create_stream())

    def _run(self) -> None:
        try:
            config = og.Config(str(self.folder))
            config.overlay(
                json.dumps(
                    {
                        "model": {
                            "decoder": {"session_options": {"intra_op_num_threads": self.threads}}
                        }
                    }
                )
            )
            self.model = og.Model(config)
            self.tokenizer = og.Tokenizer(self.model)
            self.engine = og.Engine(self.model)
            self.capacity = int(self.engine.get_capabilities().configured_max_batch_size) or 1
            self._buffer = self.engine.create_event_buffer(256)
        except BaseException as exc:  # reported to the constructor
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
        except BaseException:
            log.exception("LLM engine thread died")
            self._fail_everything("the LLM engine stopped")
            raise

    def _fail_everything(self, message: str) -> None:
        for key in list(self._active):
            _, _, job, _ = self._active.pop(key)
            job.send("", {"finish_reason": "error", "error": message})
        while True:
            try:
                job = self._incoming.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.send("", {"finish_reason": "error", "error": message})

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._active:
                job = self._incoming.get()
                if self._stop.is_set():
                    break
                self._admit(job)
            while len(self._active) < self.capacity:
                try:
                    self._admit(self._incoming.get_nowait())
                except queue.Empty:
                    break
            self._cancel_abandoned()
            if not self.engine.has_pending_requests():
                continue
            try:
                events = list(self.engine.run(self._buffer))
            except Exception as exc:
                log.exception("engine step failed")
                self._fail_everything(f"engine step failed: {exc}")
                continue
            for event in events:
                self._handle(event)

    def _cancel_abandoned(self) -> None:
        """Cancel the turns whose clients went away. Asking Triton is a round trip to the
        server process per request, so it is asked every CANCEL_CHECK_S, not every step."""
        now = time.monotonic()
        if now - self._cancel_checked < CANCEL_CHECK_S:
            return
        self._cancel_checked = now
        for request, turn, job, _ in list(self._active.values()):
            if job.is_cancelled():
                request.cancel_turn(turn)

    def _admit(self, job: Job | None) -> None:
        if job is None:  # close() woke us; the loop sees _stop
            return
        try:
            self._start(job)
        except Exception as exc:
            log.exception("could not start a request")
            job.send(
                "",
                {
                    "finish_reason": "error",
                    "error": str(exc),
                    "prompt_tokens": len(job.prompt_ids),
                    "completion_tokens": 0,
                },
            )

    def _handle(self, event: og.EngineEvent) -> None:
        key = id(event.request)
        if key not in self._active:
            return
        _, _, job, stream = self._active[key]
        flags = int(event.flags)
        if flags & int(og.EngineEventFlags.TOKEN) and event.token is not None:
            job.tokens += 1
            job.pending_ids.append(int(event.token))
            job.text += stream.decode(int(event.token))
            if self._stream_text(key, job):
                return
        if flags & (int(og.EngineEventFlags.TURN_FINISHED) | int(og.EngineEventFlags.FAILED)):
            reason = FINISH.get(event.finish_reason.name, "stop") if event.finish_reason else "stop"
            self._finish(key, reason, event.usage)

    def _stream_text(self, key: int, job: Job) -> bool:
        """Send what is safe to send; True if a stop string ended the request."""
        for stop in job.stop:
            at = job.text.find(stop, max(0, job.sent - len(stop)))
            if at != -1:
                job.text = job.text[:at]
                request, turn, _, _ = self._active[key]
                request.cancel_turn(turn)
                self._finish(key, "stop", None)
                return True
        # Hold back a tail that could be the start of a stop string.
        hold = max((len(s) - 1 for s in job.stop), default=0)
        safe = len(job.text) - hold
        if safe > job.sent:
            job.send(job.text[job.sent : safe])
            job.sent = safe
        return False

    def _finish(self, key: int, reason: str, usage: object | None) -> None:
        request, _, job, _ = self._active.pop(key)
        if job.sent < len(job.text) and reason != "cancelled":
            job.send(job.text[job.sent :])
            job.sent = len(job.text)
        job.send(
            "",
            {
                "finish_reason": reason,
                "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or len(job.prompt_ids)),
                "completion_tokens": int(getattr(usage, "generated_tokens", 0) or job.tokens),
            },
        )
        try:
            request.close()
        except Exception:  # the engine may already have released it
            log.debug("request close failed", exc_info=True)
