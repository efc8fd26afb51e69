"""The orchestrator served by uvicorn on loopback, for tests that need a real server
(WebSockets, TCP protocols, many clients at once)."""

from __future__ import annotations

import threading
import time

import uvicorn

from orchestrator.api.app import create_app
from orchestrator.config import Settings
from orchestrator.triton.launcher import TritonServer
from tests.conftest import free_port, settings_for


class LiveServer:
    """The orchestrator served by uvicorn in a thread, as ``june serve`` serves it."""

    def __init__(self, settings: Settings, triton_server: object = None) -> None:
        self.port = free_port()
        self.app = create_app(settings, triton_server=triton_server)  # type: ignore[arg-type]
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def live(triton: TritonServer, database_url: str, **overrides: object) -> LiveServer:
    """A server for ``triton`` with generous client limits (tests set their own)."""
    values: dict[str, object] = {
        "rate_limit_per_minute": 100_000,
        "rate_limit_work_per_minute": 1_000_000,
        "turn_max_tokens": 12,
        "max_audio_seconds": 120,
    }
    return LiveServer(settings_for(triton, database_url, **{**values, **overrides}))
