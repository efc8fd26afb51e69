"""API keys, per-key rate limits and per-user isolation of documents, on the real stack."""

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from orchestrator.api.app import create_app
from orchestrator.auth import revoke_key
from orchestrator.db.engine import make_sync_engine
from tests.conftest import bearer, make_key, settings_for


@pytest.fixture(scope="module")
def anonymous(settings):
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/documents"),
        ("post", "/v1/search"),
        ("post", "/v1/speak"),
        ("post", "/v1/chat"),
        ("post", "/v1/transcribe"),
        ("get", "/metrics"),
    ],
)
def test_every_endpoint_but_health_needs_a_key(anonymous, method, path):
    r = getattr(anonymous, method)(path)
    assert r.status_code == 401
    assert "API key is required" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert anonymous.get("/health").status_code == 200


def test_unknown_and_revoked_keys_are_refused(anonymous, database_url):
    r = anonymous.get("/v1/documents", headers=bearer("june_not-a-real-key"))
    assert r.status_code == 401 and "not valid" in r.json()["detail"]
    key = make_key(database_url, "leaver")
    assert anonymous.get("/v1/documents", headers=bearer(key)).status_code == 200
    assert anonymous.get("/v1/documents", headers={"x-api-key": key}).status_code == 200
    engine = make_sync_engine(database_url)
    with Session(engine) as session:
        revoke_key(session, key[:12])
    engine.dispose()
    r = anonymous.get("/v1/documents", headers=bearer(key))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_rate_limit_answers_429_with_retry_after(triton, database_url):
    key = make_key(database_url, "hasty")
    settings = settings_for(triton, database_url, rate_limit_per_minute=3)
    with TestClient(create_app(settings), headers=bearer(key)) as client:
        codes = [client.get("/v1/documents").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = client.get("/v1/documents")
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 20
        assert "3 requests a minute" in r.json()["detail"]
        other = make_key(database_url, "patient")  # limits are per key
        assert client.get("/v1/documents", headers=bearer(other)).status_code == 200


def test_users_see_only_their_own_and_shared_documents(anonymous, database_url, api_key):
    alice, bob = make_key(database_url, "alice"), make_key(database_url, "bob")
    secret = "Alice's locker combination is 4-8-15-16, kept in the blue notebook."
    r = anonymous.post(
        "/v1/documents", json={"title": "Locker", "text": secret}, headers=bearer(alice)
    )
    assert r.status_code == 201 and r.json()["shared"] is False
    doc_id = r.json()["id"]
    shared = anonymous.post(
        "/v1/documents",
        json={"title": "Canteen", "text": "The canteen opens at noon.", "shared": True},
        headers=bearer(api_key),
    )
    assert shared.status_code == 201 and shared.json()["shared"] is True

    def titles(key: str) -> set[str]:
        docs = anonymous.get("/v1/documents", params={"limit": 500}, headers=bearer(key))
        return {d["title"] for d in docs.json()["documents"]}

    assert {"Locker", "Canteen"} <= titles(alice)
    assert "Locker" not in titles(bob) and "Canteen" in titles(bob)

    query = {"query": "What is the locker combination?", "top_k": 50}
    bob_hits = anonymous.post("/v1/search", json=query, headers=bearer(bob)).json()["results"]
    assert doc_id not in {h["document_id"] for h in bob_hits}
    alice_hits = anonymous.post("/v1/search", json=query, headers=bearer(alice)).json()["results"]
    assert alice_hits[0]["document_id"] == doc_id

    assert anonymous.delete(f"/v1/documents/{doc_id}", headers=bearer(bob)).status_code == 404
    r = anonymous.post(
        "/v1/documents",
        json={"title": "Sneaky", "text": "Everyone must read this.", "shared": True},
        headers=bearer(bob),
    )
    assert r.status_code == 403
    assert anonymous.delete(f"/v1/documents/{doc_id}", headers=bearer(alice)).status_code == 204


def test_keys_cli_create_list_revoke(database_url):
    june = [str(Path(sys.executable).parent / "june"), "keys"]
    env = {"DATABASE_URL": database_url, "PATH": str(Path(sys.executable).parent)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*june, *args], env=env, capture_output=True, text=True, timeout=120)

    made = run("create", "--user", "carol", "--name", "laptop")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("june_") and len(key) > 40
    listed = run("list")
    assert "carol" in listed.stdout and key[:12] in listed.stdout and key not in listed.stdout
    assert run("revoke", key[:12]).returncode == 0
    missing = run("revoke", "june_nothing")
    assert missing.returncode == 1
    assert "no API key 'june_nothing'" in missing.stderr
