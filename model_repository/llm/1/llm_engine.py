"""Chat generation on ONNX Runtime GenAI with continuous batching, streaming deltas.

One engine thread owns the ``og.Engine``: new requests join the running batch between
steps, every step emits one token per active request, and a request leaves as soon as it
finishes, stops, or its client goes away. Messages are rendered with the model's own chat
template. Stop strings are matched on the decoded text, so a stop string split across
tokens is still caught and never sent.

While the engine is idle, it pre-fills the last system prompt it saw in a request kept
for the next chat (``warm_system_prompt``), which then pre-fills only the rest of its
prompt. ONNX Runtime GenAI 0.18's CPU engine cannot copy a KV cache between requests, and
it keeps one request's state resident: a request can take another turn only if no other
request has run since its last turn and none is running. So there is one warm request;
any other request that starts makes it stale (it is closed), and it is refilled when the
engine is idle again. A chat alone in the engine with no warm request pre-fills its system
prompt the same way, in a turn of its own, so its greedy answer does not depend on whether
the prompt was warm.
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
# A shared prompt prefix shorter than this is not worth keeping a request warm for.
MIN_WARM_TOKENS = 16
# Distinct leading (system) messages whose shared token length is remembered.
PREFIX_MEMORY = 16

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
    # Leading prompt tokens every chat with the same system prompt starts with: what a warm
    # request may already hold.
    shared: int = 0
    emit: Callable[[str, list[int], dict | None], None] = lambda delta, ids, final: None
    is_cancelled: Callable[[], bool] = lambda: False
    # engine-thread state
    text: str = ""
    sent: int = 0
    tokens: int = 0
    prefilled: int = 0  # prompt tokens already in its request when its turn began
    cached: int = 0  # of those, the ones pre-filled before the job came (reported)
    pending_ids: list[int] = field(default_factory=list)

    def send(self, delta: str, final: dict | None = None) -> None:
        ids, self.pending_ids = self.pending_ids, []
        self.emit(delta, ids, final)


@dataclass
class Warming:
    """A request pre-filling a shared prefix, and the chat waiting for it, if any."""

    request: og.Request
    prefix: tuple[int, ...]
    turn: int  # the engine's count of turns begun, this one's included
    token: int | None = None
    waiting: Job | None = None


def common_length(a: list[int] | np.ndarray, b: list[int] | np.ndarray) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def decoder_threads(requested: int) -> int:
    """Threads for the decoder's ONNX Runtime session: ``requested``, or (0) every CPU this
    process may run on. Left unset, ONNX Runtime GenAI ran the decoder on one of two cores
    (benchmarks/llm.py: 0.87x llama.cpp then, 1.04-1.21x with both cores named)."""
    return requested if requested > 0 else max(1, len(os.sched_getaffinity(0)))


class ContinuousBatcher:
    def __init__(
        self, folder: Path, *, intra_op_threads: int = 0, warm_system_prompt: bool = False
    ) -> None:
        self.folder = folder
        self.warm_system_prompt = warm_system_prompt
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
        # engine-thread state of the warm prefix: the one kept warm, the request holding
        # it (only ever that prefix), the one pre-filling it, prefixes the model does not
        # continue as written, and a count of the turns begun (a request can continue only
        # if it began the last)
        self._prefix: tuple[int, ...] = ()
        self._warm: og.Request | None = None
        self._warming: Warming | None = None
        self._unwarmable: set[tuple[int, ...]] = set()
        self._turns_begun = 0
        self._shared_prefixes: dict[str, np.ndarray] = {}  # Triton's thread only
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
    ) -> tuple[np.ndarray, int]:
        """The prompt's token ids, and how many of them lead every chat that opens with the
        same messages before its first user message (the system prompt, as the template
        writes it, up to where the user's words begin)."""
        prompt = self.template.render(messages, enable_thinking=enable_thinking)
        ids = np.asarray(self.tokenizer.encode(prompt), dtype=np.int32)
        return ids, self._shared_length(messages, ids, enable_thinking)

    def _shared_length(
        self, messages: list[dict], ids: np.ndarray, enable_thinking: bool | None
    ) -> int:
        if not self.warm_system_prompt:
            return 0
        first_user = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
        if first_user is None:
            return 0
        head = messages[:first_user]
        key = json.dumps([head, enable_thinking], sort_keys=True)
        prefix = self._shared_prefixes.get(key)
        if prefix is None:
            # Two chats that differ only in the user's words: where their tokens part is
            # where the shared prefix ends, whatever the template writes around them.
            x, y = (
                self.tokenizer.encode(
                    self.template.render(
                        [*head, {"role": "user", "content": word}],
                        enable_thinking=enable_thinking,
                    )
                )
                for word in ("x", "7")
            )
            prefix = np.asarray(x[: common_length(x, y)], dtype=np.int32)
            if len(self._shared_prefixes) >= PREFIX_MEMORY:
                self._shared_prefixes.pop(next(iter(self._shared_prefixes)))
            self._shared_prefixes[key] = prefix
        length = len(prefix)
        if length < MIN_WARM_TOKENS or length >= len(ids):
            return 0
        # The whole prompt's tokens may merge across the boundary: then nothing is shared.
        return length if np.array_equal(ids[:length], prefix) else 0

    @property
    def warm_tokens(self) -> int:
        """Tokens of system prompt the warm request holds now (0: none is warm)."""
        return len(self._prefix) if self._warm is not None else 0

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
    def _start(self, job: Job, request: og.Request | None) -> None:
        """Begin the job's turn on ``request`` (its prefix pre-filled), or on a new one."""
        if request is None:
            request, job.prefilled, job.cached = self.engine.create_request(), 0, 0
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
        self._stale_warm()
        try:
            turn = request.begin_turn(job.prompt_ids[job.prefilled :], options)
        except Exception:
            request.close()
            if not job.prefilled:
                raise
            # the engine would not continue it after all: the whole prompt, on a new one
            log.warning("could not continue a pre-filled request", exc_info=True)
            self._start(job, None)
            return
        self._turns_begun += 1
        self._active[id(request)] = (request, turn, job, self.tokenizer.create_stream())

    # --- the warm system prompt ---------------------------------------------------------
    def _prefix_of(self, job: Job) -> tuple[int, ...]:
        if job.shared < MIN_WARM_TOKENS or not self.warm_system_prompt:
            return ()
        prefix = tuple(int(t) for t in job.prompt_ids[: job.shared])
        return () if prefix in self._unwarmable else prefix

    def _alone(self) -> bool:
        return not self._active and self._warming is None

    def _stale_warm(self) -> None:
        """Another turn is about to begin: the warm request can no longer continue."""
        if self._warm is not None:
            self._warm.close()
            self._warm = None

    def _admit_warm(self, job: Job) -> bool:
        """Start the job on its pre-filled system prompt, if it is alone in the engine:
        on the warm request, on the one being pre-filled (it waits), or on one it
        pre-fills itself. False: it starts on a new request, with its whole prompt."""
        prefix = self._prefix_of(job)
        if not prefix:
            return False
        if prefix != self._prefix:  # the newest system prompt is the one kept warm
            self._prefix = prefix
            self._stale_warm()  # it holds the one before
        warming = self._warming
        if warming is not None and not self._active:
            if warming.prefix == prefix and warming.waiting is None:
                warming.waiting = job  # pre-filling since before the job came
                job.cached = len(prefix)
                return True
            return False
        if not self._alone():
            return False
        if self._warm is not None:
            warm, self._warm = self._warm, None
            job.prefilled = job.cached = len(prefix)
            self._begin(job, warm)
            return True
        return self._prefill(prefix, waiting=job)

    def _refill(self) -> None:
        """While the engine is idle: pre-fill the newest system prompt, if no request
        holds it."""
        if self._prefix and self._warm is None and self._alone():
            self._prefill(self._prefix)

    def _prefill(self, prefix: tuple[int, ...], waiting: Job | None = None) -> bool:
        """Start a request pre-filling ``prefix``.

        The engine appends the token a turn generates to the request's sequence, so the
        turn pre-fills all but the prefix's last token and generates one (greedy): if that
        is the prefix's last token, the request holds exactly the prefix (``_warmed``)."""
        if prefix in self._unwarmable:
            return False
        self._stale_warm()
        request = self.engine.create_request()
        options = og.TurnOptions(request)
        options.set_max_generated_tokens(1)
        options.set_do_sample(False)
        options.set_repetition_penalty(1.0)
        try:
            request.begin_turn(np.asarray(prefix[:-1], dtype=np.int32), options)
        except Exception:
            request.close()
            log.exception("could not pre-fill the system prompt; not keeping it warm")
            self._unwarmable.add(prefix)
            return False
        self._turns_begun += 1
        self._warming = Warming(request, prefix, self._turns_begun, waiting=waiting)
        return True

    def _warmed(self, event: og.EngineEvent) -> None:
        warming = self._warming
        assert warming is not None
        flags = int(event.flags)
        if flags & int(og.EngineEventFlags.TOKEN) and event.token is not None:
            warming.token = int(event.token)
        if not flags & (int(og.EngineEventFlags.TURN_FINISHED) | int(og.EngineEventFlags.FAILED)):
            return
        self._warming = None
        failed = bool(flags & int(og.EngineEventFlags.FAILED))
        exact = not failed and warming.token == warming.prefix[-1]
        if not exact and not failed and warming.prefix not in self._unwarmable:
            if len(self._unwarmable) >= PREFIX_MEMORY:
                self._unwarmable.clear()
            self._unwarmable.add(warming.prefix)
            log.info(
                "not pre-filling the %d-token system prompt: the model continues its "
                "prompt with token %s, not %s",
                len(warming.prefix),
                warming.token,
                warming.prefix[-1],
            )
        # It can continue only if no other turn began since, and none is running.
        usable = exact and warming.turn == self._turns_begun and not self._active
        job = warming.waiting
        if usable and job is not None:
            job.prefilled = len(warming.prefix)
            self._begin(job, warming.request)
        elif usable and warming.prefix == self._prefix:
            self._warm = warming.request
        else:
            warming.request.close()
            if job is not None:
                job.cached = 0
                self._begin(job, None)

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
        if self._warming is not None and self._warming.waiting is not None:
            self._warming.waiting.send("", {"finish_reason": "error", "error": message})
        self._warming = None
        self._warm = None  # the engine's state is unknown: pre-fill again from scratch
        while True:
            try:
                job = self._incoming.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.send("", {"finish_reason": "error", "error": message})

    def _busy(self) -> int:
        waiting = self._warming is not None and self._warming.waiting is not None
        return len(self._active) + waiting

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._busy():
                if self._incoming.empty():
                    self._refill()
                if self._warming is None:
                    job = self._incoming.get()
                    if self._stop.is_set():
                        break
                    self._admit(job)
            while self._busy() < self.capacity:
                try:
                    self._admit(self._incoming.get_nowait())
                except queue.Empty:
                    break
            self._cancel_abandoned()
            if not self.engine.has_pending_requests():
                warming, self._warming = self._warming, None
                if warming is not None:  # never spin on a lost warm-up
                    warming.request.close()
                    if warming.waiting is not None:
                        self._begin(warming.waiting, None)
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
        warming = self._warming
        if warming is not None and warming.waiting is not None and warming.waiting.is_cancelled():
            warming.waiting.send("", {"finish_reason": "cancelled"})
            warming.waiting = None

    def _admit(self, job: Job | None) -> None:
        if job is None:  # close() woke us; the loop sees _stop
            return
        if not self._admit_warm(job):
            self._begin(job, None)

    def _begin(self, job: Job, request: og.Request | None) -> None:
        try:
            self._start(job, request)
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
        if self._warming is not None and key == id(self._warming.request):
            self._warmed(event)
            return
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
                # the turn's own usage counts only what it pre-filled itself
                "prompt_tokens": len(job.prompt_ids),
                "cached_tokens": job.cached,
                "completion_tokens": int(getattr(usage, "generated_tokens", 0) or job.tokens),
            },
        )
        try:
            request.close()
        except Exception:  # the engine may already have released it
            log.debug("request close failed", exc_info=True)
