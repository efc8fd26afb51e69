"""The orchestrator's async gRPC client for Triton's models."""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TypeVar

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from opentelemetry.trace import Span
from tritonclient.utils import InferenceServerException

from orchestrator import metrics, tracing
from orchestrator.admission import Admission
from orchestrator.chat import UNFINISHED_THOUGHT, ReasoningSplitter, Sampling

log = logging.getLogger(__name__)
T = TypeVar("T")

# Set by the model doctor around its probes: a probe must reach a model whose slots are
# all held by requests stuck in a dead instance, or the death would go unnoticed.
BYPASS_ADMISSION: ContextVar[bool] = ContextVar("june_bypass_admission", default=False)

# Reconnect quickly after Triton restarts (gRPC's default backoff grows to minutes).
_CHANNEL_ARGS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


class TritonUnavailable(RuntimeError):
    """Triton cannot be reached, the model is not ready, or its deadline passed (HTTP 503)."""


class ModelUnhealthy(TritonUnavailable):
    """The model's backend process died; June reloads it (HTTP 503 meanwhile)."""

    def __init__(self, message: str, broken: str | None = None) -> None:
        super().__init__(message)
        self.broken = broken  # the model whose stub died (a step of an ensemble, maybe)


class TritonInferenceError(RuntimeError):
    """Triton answered, but the model failed the request (HTTP 502)."""


class ModelRequestError(ValueError):
    """The model refused this request's content (INVALID_ARG): HTTP 4xx, never retried."""


# A python-backend stub that died (OOM kill, crash): Triton answers every later request
# with this until the model is loaded again.
_UNHEALTHY = re.compile(r"Stub process '([A-Za-z0-9_]+?)_\d+_\d+' is not healthy")
_UNAVAILABLE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED")


def classify(model: str, status: str, message: str) -> Exception:
    """A Triton failure as June's error, by its status code (pb_utils.TritonError codes)."""
    status = (status or "").upper()
    if "is not healthy" in message:
        return ModelUnhealthy(
            f"Triton model {model!r} is restarting: its backend process died",
            unhealthy_model(message),
        )
    if "INVALID_ARGUMENT" in status or "INVALID_ARG" in status:
        reason = message.split(": ", 1)[1] if re.match(r"^[a-z_]+: ", message) else message
        return ModelRequestError(reason)
    if any(code in status for code in _UNAVAILABLE_CODES) or "not ready" in message.lower():
        return TritonUnavailable(f"Triton model {model!r} is unavailable")
    return TritonInferenceError(f"Triton model {model!r} failed: {message}")


def unhealthy_model(message: str) -> str | None:
    """The model whose stub died, from Triton's error message (None if it is not that)."""
    match = _UNHEALTHY.search(message)
    return match.group(1) if match else None


def stage_of(model: str) -> str:
    """The admission stage a Triton model's calls count against. ``vad`` has its own: live
    sessions call it every 128 ms, and must never crowd out retrieval's embeddings."""
    for stage in ("asr", "llm", "tts", "embed", "vad"):
        if model.startswith(stage):
            return stage
    return "embed"


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    no_speech_prob: float


@dataclass(frozen=True)
class ChatChunk:
    """A streamed delta, or (``finish_reason`` set) the final chunk with token counts."""

    delta: str = ""
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the LLM had pre-filled before the request came
    reasoning: str = ""  # a thinking model's reasoning: never part of ``delta``


@dataclass(frozen=True)
class Speech:
    audio: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


class TtsRequestError(ModelRequestError):
    """The TTS model refused the text (too long, bad PACE or SPEAKER): HTTP 4xx."""


class LlmRequestError(ModelRequestError):
    """The LLM refused the request (e.g. prompt + max_tokens over the context): HTTP 400."""


def _tensor(name: str, dtype: str, value: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


def _tts_inputs(text: str, pace: float | None, speaker: int | None) -> list[grpcclient.InferInput]:
    inputs = [_tensor("TEXT", "BYTES", np.array([text.encode("utf-8")], dtype=np.object_))]
    if pace is not None:
        inputs.append(_tensor("PACE", "FP32", np.array([pace], dtype=np.float32)))
    if speaker is not None:
        inputs.append(_tensor("SPEAKER", "INT32", np.array([speaker], dtype=np.int32)))
    return inputs


class TritonGateway:
    """Typed calls to June's Triton models, with metrics and clear errors.

    Every call has a deadline (``timeout_s``, or the turn's ``deadline`` if sooner) and,
    with ``admission``, holds a slot of its stage while it runs. ``on_unhealthy(model)``
    is told when a model's backend process has died, so it can be brought back;
    ``on_doubt(model)`` when a call gives reason to look at a model now: Triton did not
    answer, or a stream sent nothing for ``stall_s`` (a backend that dies mid-stream
    leaves its streams waiting, with no error).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        admission: Admission | None = None,
        on_unhealthy: Callable[[str], None] | None = None,
        on_doubt: Callable[[str], None] | None = None,
        stall_s: float = 3.0,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.admission = admission
        self.on_unhealthy = on_unhealthy
        self.on_doubt = on_doubt
        self.stall_s = stall_s
        self.last_ok: dict[str, float] = {}  # model -> monotonic time of its last success
        self._inflight: dict[str, set[asyncio.Event]] = {}  # model -> its calls' breakers
        self._client = grpcclient.InferenceServerClient(url=url, channel_args=_CHANNEL_ARGS)
        self._parameters: dict[str, dict[str, str]] = {}  # model -> its config parameters

    def fail_inflight(self, model: str, why: str) -> int:
        """Fail every call now in flight to ``model`` with :class:`ModelUnhealthy` (503).

        A python-backend stub that died never answers the requests it held: without this
        they would wait for their deadline. Returns how many calls were failed.
        """
        breakers = self._inflight.get(model, set())
        for breaker in breakers:
            breaker.set()
        if breakers:
            log.warning("failed %d call(s) in flight to %s: %s", len(breakers), model, why)
        return len(breakers)

    @asynccontextmanager
    async def _breaker(self, model: str) -> AsyncIterator[asyncio.Future]:
        """For one call: a future that :meth:`fail_inflight` completes (register once)."""
        event = asyncio.Event()
        calls = self._inflight.setdefault(model, set())
        calls.add(event)
        broken = asyncio.ensure_future(event.wait())
        try:
            yield broken
        finally:
            broken.cancel()
            calls.discard(event)

    @staticmethod
    async def _race(model: str, broken: asyncio.Future, work: Awaitable[T], timeout: float) -> T:
        """``work`` within ``timeout``, unless the call's breaker fires first."""
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait(
                {task, broken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if task in done:
                return task.result()
            if broken in done:
                raise ModelUnhealthy(f"Triton model {model!r} is restarting: its backend died")
            raise TimeoutError
        finally:
            if not task.done():
                task.cancel()

    def _slot(self, model: str, deadline: float | None) -> AbstractAsyncContextManager:
        if self.admission is None or BYPASS_ADMISSION.get():
            return nullcontext()
        return self.admission.slot(stage_of(model), deadline)

    def _timeout(self, timeout_s: float | None, deadline: float | None) -> float:
        timeout = timeout_s or self.timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
        if timeout <= 0:
            raise TritonUnavailable("the request ran out of time before the model was called")
        return timeout

    def _doubt(self, model: str) -> None:
        # the doctor's own probes never ask for one: it looks at what they find itself
        if self.on_doubt is not None and not BYPASS_ADMISSION.get():
            self.on_doubt(model)

    async def _next(
        self, model: str, broken: asyncio.Future, responses: AsyncIterator[T], timeout: float
    ) -> T:
        """A stream's next response within ``timeout``; if it takes longer than
        ``stall_s``, the doctor is asked to look at the model meanwhile."""
        waiting = asyncio.ensure_future(anext(responses))
        try:
            if self.stall_s < timeout:
                start = time.monotonic()
                done, _ = await asyncio.wait(
                    {waiting, broken}, timeout=self.stall_s, return_when=asyncio.FIRST_COMPLETED
                )
                if waiting in done:  # the usual case: no second wait per response
                    return waiting.result()
                if not done:
                    log.debug(
                        "no response from %s for %.1fs: asking for a look", model, self.stall_s
                    )
                    self._doubt(model)
                timeout -= time.monotonic() - start
            return await self._race(model, broken, waiting, max(timeout, 0.001))
        finally:
            if not waiting.done():  # the caller left (or ran out of time) while it waited
                waiting.cancel()

    def _failed(self, model: str, status: str, message: str) -> Exception:
        error = classify(model, status, message)
        kind = "unavailable" if isinstance(error, TritonUnavailable) else "inference"
        if isinstance(error, ModelRequestError):
            kind = "request"
        metrics.TRITON_ERRORS.labels(model=model, kind=kind).inc()
        if isinstance(error, ModelUnhealthy) and error.broken and self.on_unhealthy is not None:
            self.on_unhealthy(error.broken)
        return error

    async def close(self) -> None:
        await self._client.close()

    async def load_model(self, model: str, timeout_s: float = 120.0) -> None:
        """(Re)load ``model`` through Triton's model-control API (explicit mode)."""
        await self._client.load_model(model, client_timeout=timeout_s)

    async def ready(self, models: tuple[str, ...] = ()) -> bool:
        """True when the server is live and every model in ``models`` is ready."""
        try:
            if not await self._client.is_server_ready(client_timeout=2.0):
                return False
            for model in models:
                if not await self._client.is_model_ready(model, client_timeout=2.0):
                    return False
        except (InferenceServerException, grpc.RpcError, OSError):
            return False
        return True

    async def _infer(
        self,
        model: str,
        inputs: list[grpcclient.InferInput],
        outputs: list[str],
        *,
        timeout_s: float | None = None,
        deadline: float | None = None,
    ) -> grpcclient.InferResult:
        async with self._slot(model, deadline):
            start = time.perf_counter()
            timeout = self._timeout(timeout_s, deadline)
            span = tracing.client_span(model)
            try:
                async with self._breaker(model) as broken:
                    result = await self._race(
                        model,
                        broken,
                        self._client.infer(
                            model,
                            inputs,
                            outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
                            client_timeout=timeout,
                            headers=tracing.headers(span),
                        ),
                        timeout + 1.0,
                    )
            except BaseException as exc:
                tracing.failed(span, exc)
                translated = self._translated(model, exc)
                if translated is exc:
                    raise
                raise translated from exc
            finally:
                span.end()
                metrics.TRITON_LATENCY.labels(model=model).observe(time.perf_counter() - start)
        self.last_ok[model] = time.monotonic()
        return result

    def _translated(self, model: str, exc: BaseException, *, no_status: str = "") -> BaseException:
        """A failed call as June's error (missed deadline, refused request, unreachable), or
        ``exc`` itself (cancelled, or already June's). ``no_status``: the status to assume
        when Triton's error carries none (a stream's)."""
        if isinstance(exc, TimeoutError):
            metrics.TRITON_ERRORS.labels(model=model, kind="unavailable").inc()
            return TritonUnavailable(f"Triton model {model!r} missed its deadline")
        if isinstance(exc, InferenceServerException):
            return self._failed(model, exc.status() or no_status, exc.message() or "")
        if isinstance(exc, grpc.RpcError | OSError):
            metrics.TRITON_ERRORS.labels(model=model, kind="unavailable").inc()
            self._doubt(model)  # tritonserver itself may have died
            return TritonUnavailable(f"Triton at {self.url} is unreachable")
        return exc

    async def embed(
        self,
        texts: list[str],
        *,
        model: str = "embed",
        batch_size: int = 32,
        deadline: float | None = None,
    ) -> np.ndarray:
        """L2-normalised embeddings, ``[len(texts), dim]`` float32.

        Texts are sent in length order, so each request pads little; results come back in
        the caller's order.
        """
        if not texts:
            return np.zeros((0, 0), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts: list[np.ndarray] = []
        for start in range(0, len(order), batch_size):
            batch = [texts[i] for i in order[start : start + batch_size]]
            data = np.array([[t.encode("utf-8")] for t in batch], dtype=np.object_)
            result = await self._infer(
                model, [_tensor("TEXT", "BYTES", data)], ["EMBEDDING"], deadline=deadline
            )
            parts.append(result.as_numpy("EMBEDDING"))
        sorted_vectors = np.concatenate(parts).astype(np.float32, copy=False)
        vectors = np.empty_like(sorted_vectors)
        vectors[order] = sorted_vectors
        return vectors

    async def asr_languages(self) -> frozenset[str]:
        """Language codes the served Whisper accepts (from its config, read once)."""
        codes = (await self.model_parameters("asr_whisper")).get("languages", "")
        return frozenset(c for c in codes.split(",") if c)

    async def speech_segments(
        self, audio: np.ndarray, *, model: str = "vad", deadline: float | None = None
    ) -> list[tuple[float, float]]:
        """Where the speech is in 16 kHz mono audio: ``[(start_s, end_s), ...]``, padded;
        empty when there is none (Silero VAD)."""
        samples = np.ascontiguousarray(audio, dtype=np.float32)[None]
        result = await self._infer(
            model, [_tensor("AUDIO", "FP32", samples)], ["SEGMENTS"], deadline=deadline
        )
        segments = result.as_numpy("SEGMENTS").reshape(-1, 2)
        return [(float(a), float(b)) for a, b in segments]

    async def speech_probabilities(
        self,
        frames: np.ndarray,
        state: np.ndarray | None,
        *,
        model: str = "vad",
        deadline: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A live stream's next whole 512-sample frames -> each frame's speech probability,
        and the state to send with the next piece (None: the stream starts here)."""
        inputs = [_tensor("AUDIO", "FP32", np.ascontiguousarray(frames, dtype=np.float32)[None])]
        if state is not None:
            inputs.append(_tensor("STATE", "FP32", np.ascontiguousarray(state, np.float32)[None]))
        result = await self._infer(model, inputs, ["PROBS", "NEXT_STATE"], deadline=deadline)
        return result.as_numpy("PROBS").reshape(-1), result.as_numpy("NEXT_STATE").reshape(-1)

    async def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        model: str = "asr",
        deadline: float | None = None,
    ) -> Transcription:
        """16 kHz mono float32 audio -> transcript (empty when there is no speech)."""
        samples = np.ascontiguousarray(audio, dtype=np.float32)[None]
        inputs = [_tensor("AUDIO", "FP32", samples)]
        if language:
            inputs.append(
                _tensor("LANGUAGE", "BYTES", np.array([[language.encode()]], dtype=np.object_))
            )
        # CPU decoding is roughly real time at worst: allow for the audio's own length.
        timeout = self.timeout_s + len(audio) / 16000
        result = await self._infer(
            model,
            inputs,
            ["TRANSCRIPT", "DETECTED_LANGUAGE", "NO_SPEECH"],
            timeout_s=timeout,
            deadline=deadline,
        )
        return Transcription(
            text=result.as_numpy("TRANSCRIPT").reshape(-1)[0].decode("utf-8", "replace"),
            language=result.as_numpy("DETECTED_LANGUAGE").reshape(-1)[0].decode(),
            no_speech_prob=float(result.as_numpy("NO_SPEECH").reshape(-1)[0]),
        )

    async def synthesize(
        self,
        text: str,
        *,
        pace: float | None = None,
        speaker: int | None = None,
        model: str = "tts_piper",
        deadline: float | None = None,
    ) -> Speech:
        """Text -> float32 mono audio at the voice's rate (empty: nothing speakable)."""
        inputs = _tts_inputs(text, pace, speaker)
        try:
            result = await self._infer(
                model,
                inputs,
                ["AUDIO", "SAMPLE_RATE"],
                timeout_s=self.timeout_s + len(text) / 20,
                deadline=deadline,
            )
        except ModelRequestError as exc:
            raise TtsRequestError(str(exc)) from exc
        return Speech(
            audio=result.as_numpy("AUDIO").reshape(-1).astype(np.float32, copy=False),
            sample_rate=int(result.as_numpy("SAMPLE_RATE").reshape(-1)[0]),
        )

    async def synthesize_stream(
        self,
        text: str,
        *,
        pace: float | None = None,
        speaker: int | None = None,
        model: str = "tts_piper_stream",
        deadline: float | None = None,
    ) -> AsyncIterator[Speech]:
        """Text -> its audio in pieces, each as soon as the decoupled voice has decoded it
        (the first about 0.3 s long); joined, they are what :meth:`synthesize` returns.
        Nothing speakable: no pieces. Closing the iterator early cancels the synthesis."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s + len(text) / 20
        inputs = _tts_inputs(text, pace, speaker)
        span = tracing.client_span(model, stream=True)
        try:
            async with self._slot(model, deadline):
                async for result, _ in self._stream(model, inputs, deadline, TtsRequestError, span):
                    if result.get_response().outputs:
                        yield Speech(
                            audio=result.as_numpy("AUDIO").reshape(-1).astype(np.float32),
                            sample_rate=int(result.as_numpy("SAMPLE_RATE").reshape(-1)[0]),
                        )
        finally:
            span.end()

    async def chat_stream(
        self,
        messages: list[dict],
        *,
        max_tokens: int,
        sampling: Sampling | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        thinking: bool | None = None,
        model: str = "llm",
        deadline: float | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Stream a chat completion from the decoupled ``llm`` model.

        Both profiles' ``llm`` end the stream with Triton's final flag. The cpu model sets
        FINISH_REASON and the token counts on its last response; the gpu ensemble cannot (each
        response passes its postprocessing step alone), so its stream ends with an empty final
        response and the reason is worked out here: ``length`` if ``max_tokens`` were made,
        else ``stop``. TEXT is UTF-8 bytes, decoded incrementally, so a character split across
        two responses is joined. Closing the iterator early (the HTTP client went away)
        cancels the gRPC stream, and the model frees the request's slot. The whole stream
        has a deadline: ``deadline``, or ``timeout_s`` plus a second a token.

        Sampling left ``None`` is the served model's default (its checkpoint's). A thinking
        model's reasoning comes apart from the reply (:class:`ReasoningSplitter`): in
        ``reasoning``, never in ``delta``. Reasoning the token budget cut short ends the
        reply with :data:`UNFINISHED_THOUGHT` and ``finish_reason`` ``length``.
        """
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s + max_tokens
        inside = await self.thinking_mode(model) == "always"
        splitter = ReasoningSplitter(inside=inside)
        async with self._slot(model, deadline):
            async for chunk in self._chat_stream(
                messages, max_tokens, sampling or Sampling(), stop, seed, thinking, model, deadline
            ):
                reasoning, delta = splitter.push(chunk.delta)
                if chunk.finish_reason:
                    rest_reasoning, rest, unfinished = splitter.finish()
                    reasoning, delta = reasoning + rest_reasoning, delta + rest
                    if unfinished:
                        delta = UNFINISHED_THOUGHT
                        chunk = replace(chunk, finish_reason="length")
                if delta or reasoning or chunk.finish_reason:
                    yield replace(chunk, delta=delta, reasoning=reasoning)

    async def model_parameters(self, model: str) -> dict[str, str]:
        """A served model's config parameters (read once): the LLM's ``thinking`` and
        ``context_length``, Whisper's ``languages``."""
        if model not in self._parameters:
            try:
                config = await self._client.get_model_config(
                    model, as_json=True, client_timeout=self.timeout_s
                )
            except InferenceServerException as exc:
                raise TritonUnavailable(f"Triton model {model!r} is unavailable") from exc
            params = config["config"].get("parameters", {})
            self._parameters[model] = {
                key: str(value.get("string_value", "")) for key, value in params.items()
            }
        return self._parameters[model]

    async def thinking_mode(self, model: str = "llm") -> str:
        """How the served LLM thinks aloud: ``none``, ``optional`` or ``always``."""
        return (await self.model_parameters(model)).get("thinking") or "none"

    async def prompt_budget(self, cap: int, max_tokens: int, model: str = "llm") -> int:
        """Prompt tokens a chat may use: ``cap`` (JUNE_LLM_PROMPT_TOKENS, a latency choice),
        and never more than the served model's context leaves after ``max_tokens``."""
        try:
            context = int((await self.model_parameters(model)).get("context_length") or 0)
        except ValueError:
            context = 0
        return cap if context <= 0 else max(1, min(cap, context - max_tokens))

    async def _chat_stream(
        self,
        messages: list[dict],
        max_tokens: int,
        sampling: Sampling,
        stop: list[str] | None,
        seed: int | None,
        thinking: bool | None,
        model: str,
        deadline: float,
    ) -> AsyncIterator[ChatChunk]:
        inputs = [
            _tensor(
                "MESSAGES", "BYTES", np.array([json.dumps(messages).encode()], dtype=np.object_)
            ),
            _tensor("MAX_TOKENS", "INT32", np.array([max_tokens], dtype=np.int32)),
        ]
        for name, kind, dtype, value in (
            ("TEMPERATURE", "FP32", np.float32, sampling.temperature),
            ("TOP_P", "FP32", np.float32, sampling.top_p),
            ("TOP_K", "INT32", np.int32, sampling.top_k),
            ("REPETITION_PENALTY", "FP32", np.float32, sampling.repetition_penalty),
            ("ENABLE_THINKING", "BOOL", np.bool_, thinking),
        ):
            if value is not None:  # left out: the model's default
                inputs.append(_tensor(name, kind, np.array([value], dtype=dtype)))
        if stop:
            inputs.append(
                _tensor("STOP", "BYTES", np.array([s.encode() for s in stop], dtype=np.object_))
            )
        if seed is not None:
            inputs.append(_tensor("SEED", "INT64", np.array([seed], dtype=np.int64)))

        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        prompt_tokens = completion_tokens = 0
        span = tracing.client_span(model, stream=True)
        try:
            async for result, final in self._stream(model, inputs, deadline, LlmRequestError, span):
                if result.get_response().outputs:
                    delta = text.decode(result.as_numpy("TEXT")[0])
                    completion_tokens += int(result.as_numpy("TOKEN_IDS").size)
                    prompt_tokens = int(result.as_numpy("PROMPT_TOKENS")[0]) or prompt_tokens
                    reason = result.as_numpy("FINISH_REASON")[0].decode()
                    if reason:
                        cached = result.as_numpy("CACHED_TOKENS")  # not on every profile
                        cached_tokens = int(cached[0]) if cached is not None else 0
                        span.set_attribute("june.cached_prompt_tokens", cached_tokens)
                        yield ChatChunk(
                            delta=delta + text.decode(b"", final=True),
                            finish_reason=reason,
                            prompt_tokens=prompt_tokens,
                            completion_tokens=int(result.as_numpy("COMPLETION_TOKENS")[0]),
                            cached_tokens=cached_tokens,
                        )
                        return
                    if delta:
                        yield ChatChunk(delta=delta)
                if final:
                    yield ChatChunk(
                        delta=text.decode(b"", final=True),
                        finish_reason="length" if completion_tokens >= max_tokens else "stop",
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                    )
                    return
        finally:
            span.set_attribute("june.prompt_tokens", prompt_tokens)
            span.set_attribute("june.completion_tokens", completion_tokens)
            span.end()

    async def _stream(
        self,
        model: str,
        inputs: list[grpcclient.InferInput],
        deadline: float,
        refused: type[ModelRequestError],
        span: Span,
    ) -> AsyncIterator[tuple[grpcclient.InferResult, bool]]:
        """The responses of one request to a decoupled model, each with whether it is the
        last, under one deadline for the whole stream. Ends after the final response; closing
        the iterator early (the client went away) cancels the gRPC stream, and with it the
        request in the model. A refused request raises ``refused``."""

        async def requests() -> AsyncIterator[dict]:
            yield {
                "model_name": model,
                "inputs": inputs,
                "parameters": {"triton_enable_empty_final_response": True},
            }

        start = time.perf_counter()
        stream = self._client.stream_infer(
            inputs_iterator=requests(), headers=tracing.headers(span)
        )
        responses = aiter(stream)
        prefix = f"{stage_of(model)}: "
        try:
            async with self._breaker(model) as broken:  # once for the whole stream
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    try:
                        result, error = await self._next(model, broken, responses, remaining)
                    except StopAsyncIteration:
                        return
                    if error is not None:
                        message = error.message() if hasattr(error, "message") else str(error)
                        status = error.status() if hasattr(error, "status") else ""
                        failure = self._failed(model, status or "", message or "")
                        # A stream's error carries no status code: the model's own prefix
                        # says the request's content was refused.
                        if prefix in message:
                            raise refused(message.split(prefix, 1)[1]) from None
                        if isinstance(failure, ModelRequestError):
                            raise refused(str(failure)) from None
                        raise failure
                    self.last_ok[model] = time.monotonic()  # alive: it answered
                    response = result.get_response()
                    final = (
                        "triton_final_response" in response.parameters
                        and response.parameters["triton_final_response"].bool_param
                    )
                    yield result, final
                    if final:
                        return
        except (
            TimeoutError,
            InferenceServerException,
            grpc.RpcError,
            TritonUnavailable,
            TritonInferenceError,
            ModelRequestError,
        ) as exc:  # not a consumer that left (GeneratorExit): that is no failure
            tracing.failed(span, exc)
            translated = self._translated(model, exc, no_status="UNAVAILABLE")
            if translated is exc:
                raise
            raise translated from exc
        finally:
            stream.cancel()
            metrics.TRITON_LATENCY.labels(model=model).observe(time.perf_counter() - start)
