"""Known failures end a CLI command with exit code 1 and one line saying what was wrong."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("june")


def one_line_errors(func: F) -> F:
    """Turn June's own error types into ``exit 1`` plus one log line (no traceback)."""
    from exporters.common import ExportError
    from exporters.repository import RepositoryError
    from orchestrator.auth import KeyAdminError
    from orchestrator.db.engine import DatabaseError
    from orchestrator.triton.launcher import TritonError

    known = (
        ExportError,
        RepositoryError,
        DatabaseError,
        TritonError,
        KeyAdminError,
        FileNotFoundError,
    )

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except known as exc:
            log.error("%s", " ".join(str(exc).split()))
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]
