"""Postgres going away: /health says so, API calls get 503, and a restart recovers."""

import time

from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.db.engine import EmbeddedPostgres
from orchestrator.db.migrate import upgrade
from tests.conftest import bearer, make_key, settings_for


def test_database_stopped_then_restarted(triton, tmp_path):
    pgdata = tmp_path / "pgdata"
    pg = EmbeddedPostgres(pgdata)
    url = pg.start()
    upgrade(url)
    key = make_key(url, "tester")
    try:
        with TestClient(create_app(settings_for(triton, url)), headers=bearer(key)) as client:
            doc = client.post("/v1/documents", json={"title": "Kept", "text": "Survives restarts."})
            assert doc.status_code == 201

            pg.stop()

            health = client.get("/health")
            assert health.status_code == 503
            body = health.json()
            assert (body["status"], body["triton"], body["database"]) == ("degraded", "up", "down")
            r = client.post("/v1/search", json={"query": "restarts"})
            assert r.status_code == 503
            assert r.json()["detail"] == "database unavailable"

            assert pg.start() == url  # same data dir, same socket
            deadline = time.monotonic() + 30
            while client.get("/health").status_code != 200:
                assert time.monotonic() < deadline, "orchestrator did not reconnect"
                time.sleep(0.5)
            hits = client.post("/v1/search", json={"query": "restarts"}).json()["results"]
            assert hits[0]["document_id"] == doc.json()["id"]
    finally:
        pg.stop()
