"""``june db backup`` -> an empty data directory -> ``june db restore``: the same keys,
search results (chunks with their vectors) and conversations, served by a new app."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.db.engine import EmbeddedPostgres
from tests.conftest import bearer, make_key, settings_for

JUNE = str(Path(sys.executable).parent / "june")
NOTES = (
    "Garden notes. The Farrow tomato seedlings go into the greenhouse in early April. "
    "Water the Farrow beds every second evening, never at noon."
)


def june(*args: str, **env: str) -> subprocess.CompletedProcess:
    # XDG_RUNTIME_DIR unset, as on most servers: pgserver's import then warned, two lines
    unset = ("DATABASE_URL", "JUNE_DATABASE_URL", "XDG_RUNTIME_DIR")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [JUNE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, "JUNE_LOG_LEVEL": "WARNING", **env},
    )


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if " ERROR " in ln]


def snapshot(client: TestClient, key: str, conversation_id: str) -> dict:
    search = client.post(
        "/v1/search", json={"query": "When do tomatoes go in?"}, headers=bearer(key)
    )
    assert search.status_code == 200, search.text
    docs = client.get("/v1/documents", headers=bearer(key))
    talk = client.get(f"/v1/conversations/{conversation_id}", headers=bearer(key))
    assert docs.status_code == 200 and talk.status_code == 200, (docs.text, talk.text)
    return {
        "search": [
            (r["document_id"], r["text"], round(r["score"], 5)) for r in search.json()["results"]
        ],
        "documents": docs.json(),
        "turns": [(t["transcript"], t["reply"]) for t in talk.json()["turns"]],
    }


def test_a_backup_restored_into_an_empty_data_dir_serves_the_same(
    client, triton, database_url, tmp_path
):
    key = make_key(database_url, f"gardener-{uuid.uuid4().hex[:6]}")
    r = client.post("/v1/documents", json={"title": "Garden", "text": NOTES}, headers=bearer(key))
    assert r.status_code == 201, r.text
    turn = client.post(
        "/v1/chat", json={"text": "When do the Farrow seedlings go in?"}, headers=bearer(key)
    )
    assert turn.status_code == 200, turn.text
    conversation = turn.json()["conversation_id"]
    before = snapshot(client, key, conversation)
    assert before["search"] and before["turns"]

    archive = tmp_path / "june.dump"
    made = june("db", "backup", str(archive), DATABASE_URL=database_url)
    assert made.returncode == 0, made.stderr
    assert "api_keys, documents, chunks, conversations, turns" in made.stdout

    data = tmp_path / "restored"
    restored = june("db", "restore", str(archive), JUNE_DATA_DIR=str(data))
    assert restored.returncode == 0, restored.stderr

    with EmbeddedPostgres(data / "pgdata") as pg:
        settings = settings_for(triton, pg.url)
        with TestClient(create_app(settings)) as other:
            after = snapshot(other, key, conversation)  # the same key works there too
        assert after == before

        # a second restore over data is refused in one line, and nothing is lost
        again = june("db", "restore", str(archive), JUNE_DATA_DIR=str(data))
        assert again.returncode == 1 and len(errors(again)) == 1, again.stderr
        assert "already holds" in errors(again)[0] and "--force" in errors(again)[0]
        with TestClient(create_app(settings)) as other:
            assert snapshot(other, key, conversation) == before


def test_what_is_not_a_backup_is_refused_in_one_line(tmp_path):
    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"PGDMP? no, just bytes")
    for path in (junk, tmp_path / "missing.dump"):
        proc = june("db", "restore", str(path), JUNE_DATA_DIR=str(tmp_path / "data"))
        assert proc.returncode == 1, proc.stderr
        assert len(errors(proc)) == 1, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # that line only
    assert not (tmp_path / "data" / "pgdata").exists()  # missing: refused before starting
