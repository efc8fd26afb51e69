"""Logging set-up shared by the CLI, the orchestrator and the Triton launcher.

One record per line on stderr (greppable, and a CLI error is exactly one line); rich is
kept for progress bars and tables only.
"""

from __future__ import annotations

import logging
import sys

NOISY = ("httpx", "httpcore", "alembic", "pgserver", "onnx_ir", "onnxscript")


def setup_logging(level: str = "INFO") -> None:
    """Route all logs through one stderr handler, at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
