"""Logging set-up shared by the CLI, the orchestrator and the Triton launcher."""

from __future__ import annotations

import logging

from rich.logging import RichHandler


def setup_logging(level: str = "INFO") -> None:
    """Route all logs through one handler, at ``level``."""
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(rich_tracebacks=True, show_path=False)],
        force=True,
    )
    for noisy in (
        "httpx",
        "httpcore",
        "alembic.runtime.migration",
        "pgserver",
        "onnx_ir",
        "onnxscript",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
