"""Known failures end a CLI command with exit code 1 and one line saying what was wrong.

Each package's own error types (ExportError, RepositoryError, DatabaseError, TritonError,
KeyAdminError, LoadError) subclass :class:`CommandError`; this module imports none of
them, so ``exporters/``, ``benchmarks/`` and ``orchestrator/`` depend on it without a
cycle.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("june")


class CommandError(RuntimeError):
    """A failure a CLI command reports in one line with exit code 1 (no traceback)."""


def one_line_errors(func: F) -> F:
    """Turn June's own error types into ``exit 1`` plus one log line (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (CommandError, FileNotFoundError) as exc:
            log.error("%s", " ".join(str(exc).split()))
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]
