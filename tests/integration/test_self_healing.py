"""Faults June heals by itself: a model's backend process killed mid-turn, and a kill -9
of ``june serve``. Each test runs its own servers, on loopback, bounded in time."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from benchmarks.speech import piper_wav
from tests.conftest import bearer, free_port, make_key, make_triton, settings_for
from tests.live_server import LiveServer

log = logging.getLogger(__name__)


def stub_of(triton_pid: int, model: str) -> psutil.Process:
    """The python-backend stub process serving ``model`` (its instance is ``<model>_0_0``)."""
    for child in psutil.Process(triton_pid).children(recursive=True):
        try:
            if any(part == f"{model}_0_0" or part.startswith(f"{model}_0_0")
                   for part in child.cmdline()):  # fmt: skip
                return child
        except psutil.Error:
            continue
    raise LookupError(f"no stub for {model}")


def recovered(client: httpx.Client) -> dict[str, float]:
    """``june_model_recoveries_total``, by its labels."""
    return {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("june_model_recoveries_total{")
    }


def wait_until(predicate, timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout_s} s")


@pytest.fixture
def healing(model_repo, tmp_path, database_url):
    server = make_triton(model_repo, tmp_path / "triton")
    server.start(timeout_s=180)
    settings = settings_for(
        server,
        database_url,
        # no idle probes: the doctor must hear of a death from the calls themselves (an
        # error, or a stream that stalls for stream_stall_check_s)
        health_probe_interval_s=3600,
        triton_request_timeout_s=20,
        turn_deadline_s=30,
        rate_limit_per_minute=100_000,
        turn_max_tokens=200,
    )
    # the app may restart this Triton if reloading fails: it is handed the process
    with LiveServer(settings, triton_server=server) as live:
        yield live, server
    server.stop()


# "tritonserver": the server itself dies mid-chat (its python backend can abort when a stub
# dies mid-stream); June restarts it when a call finds it unreachable
@pytest.mark.parametrize("model", ["llm", "asr_whisper", "tts_piper_vits_stream", "tritonserver"])
def test_a_killed_model_backend_fails_cleanly_then_heals(healing, database_url, model):
    live, triton = healing
    key = make_key(database_url, f"heal-{uuid.uuid4().hex[:8]}")
    client = httpx.Client(base_url=live.url, headers=bearer(key), timeout=60)
    question = piper_wav("Please tell me a long story about the sea and the ships on it.")

    story = " ".join(["The ships sailed on across the wide grey sea, far from home."] * 6)

    def ask() -> httpx.Response:
        if model in ("llm", "tritonserver"):
            return client.post("/v1/chat", json={"text": "Tell me a long story about the sea."})
        if model == "tts_piper_vits_stream":  # the streamed voice speaks the first sentence
            return client.post("/v1/speak", json={"text": story, "stream": True})
        return client.post("/v1/transcribe", files={"file": ("q.wav", question)})

    assert ask().status_code == 200
    before = recovered(client)  # the counters are process-wide: earlier tests' count too
    import threading

    results: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: results.append(ask()))
    worker.start()
    time.sleep(0.3 if model in ("llm", "tritonserver") else 0.1)
    # what the kernel's OOM killer does
    victim = psutil.Process(triton.pid) if model == "tritonserver" else stub_of(triton.pid, model)
    victim.kill()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the in-flight request hung"
    failed = results[0]
    if failed.status_code != 200:  # the turn was cut: a clean, retryable failure
        assert failed.status_code == 503, failed.text
        assert failed.headers["retry-after"]
        # failed because the death was found, not left to run out its deadline
        assert "restarting" in failed.text or "unreachable" in failed.text, failed.text
    healed = wait_until(lambda: ask().status_code == 200, 60)
    health = wait_until(lambda: client.get("/health").status_code == 200, 30)
    # June reloaded the model, or, when tritonserver itself aborted (its python backend can
    # throw boost's lock_exception when a stub dies mid-stream), restarted tritonserver
    after = recovered(client)
    recoveries = {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}
    assert sum(recoveries.values()) >= 1, recoveries
    assert all('action="reload"' in k or 'action="restart"' in k for k in recoveries)
    log.info(
        "%s: answered again %.1f s after the kill; healthy after %.1f s; recoveries %s",
        model, healed, health, recoveries,
    )  # fmt: skip


def june(*args: str, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).parent / "june"), *args], env=env, **kw)


def under(data_dir: Path) -> list[psutil.Process]:
    """Servers (Triton, its stubs, Postgres) working in ``data_dir``, reaper excluded."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if str(data_dir) in cmd and "orchestrator.reaper" not in cmd:
            found.append(proc)
    return found


def test_kill_9_of_june_serve_leaves_no_server_and_the_next_start_works(
    tmp_path, model_repo, cache_dir
):
    data_dir = tmp_path / "var"
    port = free_port()
    env = {
        **os.environ,
        "JUNE_PORT": str(port),
        "JUNE_DATA_DIR": str(data_dir),
        "JUNE_CACHE_DIR": str(cache_dir),
        "JUNE_MODEL_REPOSITORY": str(model_repo),
        "JUNE_TRITON_HTTP_PORT": str(free_port()),
        "JUNE_TRITON_GRPC_PORT": str(free_port()),
        "JUNE_TRITON_METRICS_PORT": str(free_port()),
    }
    env.pop("DATABASE_URL", None)

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    for attempt in ("first", "after kill -9"):
        output = (tmp_path / f"serve-{attempt}.log").open("w")
        proc = june("serve", "--no-build", env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda p=proc: p.poll() is None and healthy(), 180)
        except AssertionError:
            raise AssertionError((tmp_path / f"serve-{attempt}.log").read_text()[-3000:]) from None
        assert under(data_dir), "Triton and Postgres should be running in the data dir"
        if attempt == "first":
            proc.send_signal(signal.SIGKILL)  # as the OOM killer would
            proc.wait(timeout=10)
            gone = wait_until(lambda: not under(data_dir), 30)
            log.info("servers gone %.1f s after kill -9", gone)
        else:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            try:
                wait_until(lambda: not under(data_dir), 15)
            except AssertionError:
                left = [" ".join(p.cmdline())[:200] for p in under(data_dir)]
                raise AssertionError(f"left running: {left}") from None
        output.close()
