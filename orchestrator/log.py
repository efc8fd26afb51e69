"""Logging set-up shared by the CLI, the orchestrator and the Triton launcher.

One record per line on stderr: text (greppable, and a CLI error is exactly one line) or
JSON (``JUNE_LOG_FORMAT=json``, python-json-logger) for a log pipeline. Every record made
while a request or a turn is handled carries its ids (``request_id``, ``turn``, and
``trace_id`` inside a traced request), whichever logger made it: a log-record factory reads
them from context variables that the request middleware and the turn service set. rich
is kept for progress bars and tables only.

Nothing at INFO or above carries a transcript, a reply, a document or a key: those are
the users' words and secrets (``tests/integration/test_request_ids.py`` checks a turn's
log for them).
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

NOISY = ("httpx", "httpcore", "alembic", "pgserver", "onnx_ir", "onnxscript")

REQUEST_ID: ContextVar[str | None] = ContextVar("june_request_id", default=None)
TURN_ID: ContextVar[str | None] = ContextVar("june_turn_id", default=None)
CONTEXT_FIELDS = ("request_id", "turn", "trace_id")


def _install_record_factory() -> None:
    """Give every log record the ids of the request and turn it was made in."""
    current = logging.getLogRecordFactory()
    if getattr(current, "june_context", False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        record.turn = TURN_ID.get()
        span = trace.get_current_span().get_span_context()
        record.trace_id = f"{span.trace_id:032x}" if span.is_valid else None
        return record

    make.june_context = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)


class TextFormatter(logging.Formatter):
    """``12:00:00 INFO    june.turn: message [request_id=... turn=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(
            f"{name}={value}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        )
        return f"{line} [{ids}]" if ids else line


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "{asctime}{levelname}{name}{message}" + "".join(f"{{{f}}}" for f in CONTEXT_FIELDS),
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Route all logs through one stderr handler, at ``level``, as ``text`` or ``json``."""
    _install_record_factory()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


_install_record_factory()  # records made before set-up (tests, libraries) carry the ids too
