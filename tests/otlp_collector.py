"""A local OTLP/HTTP trace receiver on 127.0.0.1, standing in for an OpenTelemetry Collector.

It accepts ``POST /v1/traces`` in OTLP's JSON encoding (what both June's exporter and
Triton's C++ exporter send) and keeps every span as a :class:`Received`, so a test can
join Triton's spans to June's by trace and parent ids.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    name: str
    trace_id: str  # hex
    span_id: str
    parent_id: str | None
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, object]


def _value(v: dict) -> object:
    for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if key in v:
            return v[key]
    return None


def _from_json(body: bytes) -> list[Received]:
    out = []
    for rs in json.loads(body).get("resourceSpans", []):
        resource = {
            a["key"]: _value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])
        }
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                out.append(
                    Received(
                        name=s["name"],
                        trace_id=s["traceId"].lower(),
                        span_id=s["spanId"].lower(),
                        parent_id=(s.get("parentSpanId") or "").lower() or None,
                        service=str(resource.get("service.name", "")),
                        start_ns=int(s.get("startTimeUnixNano", 0)),
                        end_ns=int(s.get("endTimeUnixNano", 0)),
                        attributes={a["key"]: _value(a["value"]) for a in s.get("attributes", [])},
                    )
                )
    return out


class Collector:
    def __init__(self, port: int = 0) -> None:
        self.spans: list[Received] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                kind = self.headers.get("Content-Type", "")
                try:
                    spans = _from_json(body)
                except Exception as exc:  # kept for the test to report
                    collector.errors.append(f"{exc!r}: {dict(self.headers)} {body[:200]!r}")
                    raise
                with collector._lock:
                    collector.spans.extend(spans)
                self.send_response(200)
                self.send_header("Content-Type", kind or "application/json")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of_trace(self, trace_id: str) -> list[Received]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(
        self, trace_id: str, done: Callable[[list[Received]], bool], timeout_s: float = 20.0
    ) -> list[Received]:
        """The trace's spans once ``done`` says all have come (or at the timeout): a server
        exports in batches, so one request's spans can arrive in several posts."""
        end = time.monotonic() + timeout_s
        while True:
            spans = self.of_trace(trace_id)
            if done(spans) or time.monotonic() > end:
                return spans
            time.sleep(0.1)
