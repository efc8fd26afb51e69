"""``june serve`` as an operator runs it: the README's curl flow, then Ctrl-C leaves nothing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import free_port


def children_matching(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_readme_flow_and_clean_shutdown(tmp_path, cache_dir, embedder_export, stop_signal):
    port = free_port()
    data_dir = tmp_path / "var"
    env = {
        **os.environ,
        "JUNE_PORT": str(port),
        "JUNE_DATA_DIR": str(data_dir),
        "JUNE_CACHE_DIR": str(cache_dir),
        "JUNE_MODEL_REPOSITORY": str(tmp_path / "repo"),
        "JUNE_TRITON_HTTP_PORT": str(free_port()),
        "JUNE_TRITON_GRPC_PORT": str(free_port()),
        "JUNE_TRITON_METRICS_PORT": str(free_port()),
    }
    env.pop("DATABASE_URL", None)
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "june"), "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError("june serve did not become healthy")

        keys = subprocess.run(
            [str(Path(sys.executable).parent / "june"), "keys", "create", "--user", "readme"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert keys.returncode == 0, keys.stderr
        auth = {"authorization": f"Bearer {keys.stdout.strip()}"}
        assert httpx.get(f"{base}/v1/documents").status_code == 401  # no key, no data
        docs = [
            ("Office hours", "The support desk is open 9am to 5pm on weekdays."),
            ("Parking", "Visitors park in the blue garage on Elm Street."),
            ("Cafeteria", "The cafeteria serves lasagne on Thursdays."),
        ]
        for title, text in docs:
            r = httpx.post(
                f"{base}/v1/documents", json={"title": title, "text": text}, headers=auth
            )
            assert r.status_code == 201, r.text
        r = httpx.post(
            f"{base}/v1/search", json={"query": "Where do I park?", "top_k": 3}, headers=auth
        )
        assert r.json()["results"][0]["title"] == "Parking"
        assert children_matching(str(data_dir))  # Triton and Postgres run under the data dir
    finally:
        proc.send_signal(stop_signal)
        code = proc.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    time.sleep(1)
    leftovers = children_matching(str(data_dir))
    assert not leftovers, [p.info["cmdline"] for p in leftovers]
