"""Two orchestrator processes (``june api``) on one Triton and one database, as replicas
run: with JUNE_RATE_LIMIT_STORE=database a key's limit holds in total, not per replica,
and a turn retried on the other replica is answered once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.conftest import bearer, free_port, make_key
from tests.integration.test_many_users import count_turns

JUNE = str(Path(sys.executable).parent / "june")


@contextmanager
def replica(triton, database_url: str, **env: str) -> Iterator[str]:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JUNE_", "OTEL_"))}
    proc = subprocess.Popen(
        [JUNE, "api", "--port", str(port)],
        env={
            **base,
            "DATABASE_URL": database_url,
            "JUNE_TRITON_HOST": triton.host,
            "JUNE_TRITON_GRPC_PORT": str(triton.grpc_port),
            "JUNE_TRITON_HTTP_PORT": str(triton.http_port),
            "JUNE_MODEL_REPOSITORY": str(triton.repository),
            "JUNE_HEALTH_PROBE_INTERVAL_S": "3600",
            "JUNE_TURN_MAX_TOKENS": "12",
            "JUNE_LOG_LEVEL": "WARNING",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "replica did not start"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def statuses(urls: list[str], key: str, n: int) -> list[int]:
    """``n`` requests, alternating between the replicas."""
    with httpx.Client(headers=bearer(key), timeout=30) as c:
        return [c.get(f"{urls[i % len(urls)]}/v1/documents").status_code for i in range(n)]


def test_a_keys_limit_holds_across_replicas_only_with_shared_state(triton, database_url):
    limits = {"JUNE_RATE_LIMIT_PER_MINUTE": "6", "JUNE_RATE_LIMIT_BURST": "6"}
    with ExitStack() as stack:
        shared = [
            stack.enter_context(
                replica(triton, database_url, JUNE_RATE_LIMIT_STORE="database", **limits)
            )
            for _ in range(2)
        ]
        alone = [stack.enter_context(replica(triton, database_url, **limits)) for _ in range(2)]

        key = make_key(database_url, f"shared-{uuid.uuid4().hex[:6]}")
        got = statuses(shared, key, 12)
        assert got.count(200) == 6 and got.count(429) == 6, got  # 6 a minute in total

        key = make_key(database_url, f"apart-{uuid.uuid4().hex[:6]}")
        got = statuses(alone, key, 12)
        assert got.count(200) == 12, got  # each replica's own bucket: the limit twice over


def test_a_turn_retried_on_the_other_replica_is_answered_once(triton, database_url):
    user = f"retry-{uuid.uuid4().hex[:6]}"
    key = make_key(database_url, user)
    with ExitStack() as stack:
        urls = [
            stack.enter_context(replica(triton, database_url, JUNE_RATE_LIMIT_STORE="database"))
            for _ in range(2)
        ]

        async def both() -> list[httpx.Response]:
            async with httpx.AsyncClient(headers=bearer(key), timeout=120) as c:
                body = {"text": "Name a colour.", "request_id": f"r-{uuid.uuid4().hex[:8]}"}
                return await asyncio.gather(*(c.post(f"{u}/v1/chat", json=body) for u in urls))

        answers = asyncio.run(both())
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    assert len({r.json()["turn_id"] for r in answers}) == 1
    assert sorted(r.json()["replayed"] for r in answers) == [False, True]
    assert count_turns(database_url, user) == 1
