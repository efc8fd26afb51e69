"""The whole embedded stack in one process tree: Postgres, Triton, the orchestrator.

Start order follows dependencies (database, then models, then the API); stop order is the
reverse, and runs on Ctrl-C, SIGTERM or any failure, so no server outlives ``june serve``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
from contextlib import ExitStack
from types import FrameType

import uvicorn

from orchestrator import tracing
from orchestrator.api.app import create_app
from orchestrator.config import Settings
from orchestrator.db.engine import DatabaseError, EmbeddedPostgres
from orchestrator.db.migrate import upgrade
from orchestrator.reaper import start_reaper, stop_stale_servers
from orchestrator.triton.launcher import TritonServer

log = logging.getLogger("june.stack")


def start_database(settings: Settings, stack: ExitStack) -> str:
    """The database URL to use: ``DATABASE_URL`` or a freshly started embedded Postgres."""
    if settings.database_url:
        log.info("using external database from DATABASE_URL")
        return settings.database_url
    pg = stack.enter_context(EmbeddedPostgres(settings.pgdata))
    return pg.url


def triton_for(settings: Settings) -> TritonServer:
    return TritonServer(
        settings.model_repository,
        runtime_dir=settings.data_dir / "triton",
        host=settings.triton_host,
        http_port=settings.triton_http_port,
        grpc_port=settings.triton_grpc_port,
        metrics_port=settings.triton_metrics_port,
        extra_args=tracing.triton_args(settings),
    )


class _Stop(Exception):
    """Raised by the SIGINT/SIGTERM handler to unwind the stack in order."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def serve(settings: Settings) -> None:
    """Run Postgres, Triton and the orchestrator in the foreground until interrupted.

    uvicorn handles the first SIGINT/SIGTERM itself (graceful HTTP shutdown), then re-raises
    it; our handler turns that, or a signal during start-up, into an orderly unwind.
    """
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in handled}
    try:
        _run(settings)
    except _Stop as stop:
        log.info("received %s", stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("June stopped")


def serve_api(settings: Settings) -> None:
    """Only the orchestrator, against an external Triton and database (compose, k8s)."""
    if not settings.database_url:
        raise DatabaseError("june api needs DATABASE_URL (the embedded database is for june serve)")
    upgrade(settings.database_url)
    _run_uvicorn(settings, settings.database_url)


def _run_uvicorn(settings: Settings, database_url: str, triton: TritonServer | None = None) -> None:
    app = create_app(
        settings.model_copy(update={"database_url": database_url}), triton_server=triton
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # in-flight requests get this long after a stop signal, then are cancelled
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        # longer than clients keep idle connections (httpx: 5 s), so a client never
        # reuses a connection the server is closing at that moment
        timeout_keep_alive=75,
        # /v1/realtime refuses messages over its own limit with an error event first
        ws_max_size=4 * settings.realtime_max_message_bytes,
    )
    log.info("June is up: http://%s:%d (docs at /docs)", settings.host, settings.port)
    uvicorn.Server(config).run()


def _run(settings: Settings) -> None:
    stop_stale_servers(settings.data_dir)  # a previous june serve that was killed
    reaper = start_reaper(settings.data_dir)  # and if this one is killed
    with ExitStack() as stack:
        stack.callback(_stop_reaper, reaper)
        url = start_database(settings, stack)
        upgrade(url)
        triton = triton_for(settings)
        stack.callback(triton.stop)
        triton.start(timeout_s=settings.triton_start_timeout_s)
        _run_uvicorn(settings, url, triton)


def _stop_reaper(reaper: subprocess.Popen[bytes]) -> None:
    reaper.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        reaper.wait(timeout=5)
