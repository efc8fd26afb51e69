"""Killing Triton: /health says so, search answers 503, and a restart recovers by itself."""

import time

import pytest
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from tests.conftest import bearer, make_triton, settings_for


def wait_for(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


@pytest.fixture
def own_triton(model_repo, tmp_path):
    server = make_triton(model_repo, tmp_path / "triton")
    server.start(timeout_s=120)
    yield server
    server.stop()


def test_triton_killed_then_restarted(own_triton, database_url, api_key):
    settings = settings_for(own_triton, database_url, triton_request_timeout_s=5)
    with TestClient(create_app(settings), headers=bearer(api_key)) as client:
        doc = client.post("/v1/documents", json={"title": "Fault", "text": "Fault test document."})
        assert doc.status_code == 201
        assert client.post("/v1/search", json={"query": "fault"}).status_code == 200

        own_triton.kill()

        health = client.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert (body["status"], body["triton"], body["database"]) == ("degraded", "down", "up")
        assert set(body["models"].values()) == {"down"}
        r = client.post("/v1/search", json={"query": "fault"})
        assert r.status_code == 503
        assert "unavailable" in r.json()["detail"]
        assert r.headers["retry-after"]
        before = len(client.get("/v1/documents", params={"limit": 500}).json()["documents"])
        r = client.post("/v1/documents", json={"title": "Lost?", "text": "Not stored."})
        assert r.status_code == 503
        after = len(client.get("/v1/documents", params={"limit": 500}).json()["documents"])
        assert after == before  # a failed ingest writes nothing

        own_triton.start(timeout_s=120)  # same ports, same orchestrator

        assert wait_for(lambda: client.get("/health").status_code == 200)
        r = client.post("/v1/search", json={"query": "fault test"})
        assert r.status_code == 200
        assert r.json()["results"][0]["document_id"] == doc.json()["id"]
        client.delete(f"/v1/documents/{doc.json()['id']}")
