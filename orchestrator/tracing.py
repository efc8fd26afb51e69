"""OpenTelemetry traces: one trace per request, a span per stage of a turn, and Triton's own.

Off unless configured, by the standard variables: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(the full URL) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` is added), with
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS`` and the
sampler variables read by the SDK itself. ``OTEL_SDK_DISABLED=true`` turns it off.

A turn's trace reads as the data flows::

    POST /v1/voice                  (server span, the request)
      turn
        decode
        vad        -> triton vad        -> Triton: InferRequest > vad > compute
        transcribe -> triton asr        -> Triton: InferRequest > asr > asr_features, ...
        retrieve   -> triton embed      -> ...
        generate   -> triton llm        -> ...
        synthesise (one per sentence) -> triton tts_piper -> ...
        store

The ``triton <model>`` client spans carry W3C ``traceparent`` in the gRPC metadata, and
Triton (started with ``--trace-config mode=opentelemetry`` when tracing is on) makes its
request, model and compute spans children of them, exported to the same endpoint over
OTLP/HTTP. So one trace shows where a slow turn spent its time, on both sides.

Spans are never made current across a ``yield``: a turn is an async generator, and a
context attached before a yield would leak into its consumer and could be detached in
another context (a client that hangs up closes the generator from elsewhere). Stages that
stream take their parent explicitly instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from orchestrator.config import Settings

log = logging.getLogger(__name__)

TRACER = trace.get_tracer("june")
_configured = False


def configure(settings: Settings) -> bool:
    """Install the SDK with an OTLP/HTTP (JSON) exporter when an endpoint is configured (once
    per process; later calls keep the first). True when traces are exported."""
    global _configured
    endpoint = settings.traces_endpoint
    if endpoint is None:
        return False
    if _configured:
        return True
    from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from orchestrator import __version__

    provider = TracerProvider(
        resource=Resource.create({"service.name": "june", "service.version": __version__})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _configured = True
    log.info("tracing on: spans go to %s", endpoint)
    return True


def shutdown() -> None:
    """Send the spans still buffered (at exit)."""
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def triton_args(settings: Settings) -> list[str]:
    """``tritonserver`` flags that export its spans to the same endpoint, or none.

    Triton's exporter speaks OTLP/HTTP (JSON) only, so the endpoint must be the HTTP one
    (port 4318 on a collector). It samples one request in ``triton_trace_rate``; a request
    that carries a ``traceparent`` joins the caller's trace.
    """
    endpoint = settings.traces_endpoint
    if endpoint is None:
        return []
    return [
        "--trace-config=mode=opentelemetry",
        "--trace-config=level=TIMESTAMPS",
        f"--trace-config=rate={settings.triton_trace_rate}",
        f"--trace-config=opentelemetry,url={endpoint}",
        f"--trace-config=opentelemetry,resource=service.name={settings.triton_service_name}",
    ]


def headers(span: Span | None = None) -> dict[str, str]:
    """W3C trace-context headers for a call made under ``span`` (or the current span)."""
    carrier: dict[str, str] = {}
    ctx = trace.set_span_in_context(span) if span is not None else None
    propagate.inject(carrier, context=ctx)
    return carrier


def start(name: str, parent: Span | None = None, **attributes: str | int | float) -> Span:
    """A span that is not made current: for work that streams (see the module's notes)."""
    ctx = trace.set_span_in_context(parent) if parent is not None else None
    return TRACER.start_span(name, context=ctx, attributes=attributes or None)


@contextmanager
def stage(name: str, parent: Span | None = None, **attributes: str | int | float) -> Iterator[Span]:
    """A span, current while the block runs; the block must not ``yield`` from a generator.

    An exception marks the span as an error with the exception's type, never its message
    (a message can quote the user's words).
    """
    span = start(name, parent, **attributes)
    with ended(span), current(span):
        yield span


@contextmanager
def ended(span: Span) -> Iterator[Span]:
    """End ``span`` when the block ends, marked as an error if it raised. The block may
    span ``yield``s (nothing is made current); a consumer that leaves an async generator
    early (``GeneratorExit``) is not an error."""
    try:
        yield span
    except BaseException as exc:
        if not isinstance(exc, GeneratorExit):
            failed(span, exc)
        raise
    finally:
        span.end()


@contextmanager
def current(span: Span) -> Iterator[Span]:
    """``span`` current while the block runs (not ended after); no ``yield`` inside."""
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)


def failed(span: Span, exc: BaseException) -> None:
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    span.set_attribute("error.type", type(exc).__name__)


def client_span(model: str, *, stream: bool = False) -> Span:
    """The span of one Triton call, under the current span."""
    return TRACER.start_span(
        f"triton {model}",
        kind=SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "june.model": model, "june.stream": stream},
    )
