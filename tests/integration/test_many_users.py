"""Many users at once, against a real uvicorn server, real Triton and real Postgres.

Small and bounded: every test sends a fixed number of requests to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from tests.conftest import bearer, make_key, wav_bytes
from tests.live_server import LiveServer, live


@pytest.fixture(scope="module")
def crowd(triton, database_url) -> Iterator[LiveServer]:
    """A small database pool (2 + 0): many turns must share two connections."""
    with live(triton, database_url, db_pool_size=2, db_max_overflow=0) as server:
        yield server


def count_turns(database_url: str, user: str) -> int:
    from sqlalchemy import create_engine

    from orchestrator.db.engine import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM turns WHERE user_id = :u"), {"u": user}
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_24_concurrent_text_turns_on_a_pool_of_two_all_answer(crowd, database_url):
    user = f"crowd-{uuid.uuid4().hex[:8]}"
    key = make_key(database_url, user)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=crowd.url, headers=bearer(key), timeout=120) as c:
            health = asyncio.create_task(probe_health(c))
            answers = await asyncio.gather(
                *(c.post("/v1/chat", json={"text": f"Say hello to number {i}."}) for i in range(24))
            )
            return [*answers, *await health]

    async def probe_health(c: httpx.AsyncClient) -> list[httpx.Response]:
        out = []
        for _ in range(6):
            await asyncio.sleep(0.5)
            out.append(await c.get("/health"))
        return out

    responses = asyncio.run(run())
    turns, health = responses[:24], responses[24:]
    assert [r.status_code for r in turns] == [200] * 24, [r.text for r in turns if r.is_error]
    assert [r.status_code for r in health] == [200] * 6, [r.text for r in health]
    assert len({r.json()["turn_id"] for r in turns}) == 24
    assert count_turns(database_url, user) == 24


def test_concurrent_duplicates_run_once_and_concurrent_turns_keep_their_order(crowd, database_url):
    user = f"race-{uuid.uuid4().hex[:8]}"
    key = make_key(database_url, user)
    request_id = f"dup-{uuid.uuid4()}"

    async def run() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=crowd.url, headers=bearer(key), timeout=120) as c:
            dups = await asyncio.gather(
                *(
                    c.post(
                        "/v1/chat", json={"text": "What is two and two?", "request_id": request_id}
                    )
                    for _ in range(3)
                )
            )
            first = (await c.post("/v1/chat", json={"text": "Hello."})).json()
            convo = first["conversation_id"]
            same = await asyncio.gather(
                *(
                    c.post("/v1/chat", json={"text": f"Question {i}?", "conversation_id": convo})
                    for i in range(4)
                )
            )
            stored = await c.get(f"/v1/conversations/{convo}")
            return list(dups), [*same, stored]

    dups, (*same, stored) = asyncio.run(run())
    assert [r.status_code for r in dups] == [200] * 3, [r.text for r in dups]
    assert len({r.json()["turn_id"] for r in dups}) == 1  # one turn, three answers
    assert sorted(r.json()["replayed"] for r in dups) == [False, True, True]
    assert [r.status_code for r in same] == [200] * 4, [r.text for r in same]
    ordinals = [t["ordinal"] for t in stored.json()["turns"]]
    assert ordinals == [1, 2, 3, 4, 5]
    assert count_turns(database_url, user) == 1 + 1 + 4


def test_an_overloaded_stage_answers_503_with_retry_after_at_once(triton, database_url):
    key = make_key(database_url, f"shed-{uuid.uuid4().hex[:8]}")
    with live(triton, database_url, turn_concurrency=1, queue_depth=0, turn_max_tokens=48) as srv:

        async def run() -> list[tuple[int, float, str | None]]:
            async with httpx.AsyncClient(base_url=srv.url, headers=bearer(key), timeout=120) as c:

                async def one(i: int) -> tuple[int, float, str | None]:
                    start = time.monotonic()
                    r = await c.post("/v1/chat", json={"text": f"Tell me a story {i}."})
                    return r.status_code, time.monotonic() - start, r.headers.get("retry-after")

                return await asyncio.gather(*(one(i) for i in range(4)))

        results = asyncio.run(run())
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 200 and set(codes) <= {200, 503}, results
    shed = [(t, retry) for code, t, retry in results if code == 503]
    assert shed, results
    assert all(t < 1.0 and retry and int(retry) >= 1 for t, retry in shed), shed


def raw_post(port: int, path: str, headers: dict[str, str], declared: int) -> tuple[str, float]:
    """Send only the headers of a request that declares a big body; the status line, and
    how long it took. A server that read the body first would wait for it forever."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        lines = [
            f"POST {path} HTTP/1.1",
            "Host: 127.0.0.1",
            f"Content-Length: {declared}",
            "Content-Type: application/json",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = sock.recv(4096).split(b"\r\n", 1)[0].decode()
    return status, time.monotonic() - start


def test_anonymous_and_forged_bodies_are_refused_before_they_are_read(crowd):
    status, took = raw_post(crowd.port, "/v1/documents", {}, 20_000_000)
    assert " 401 " in status and took < 2
    status, took = raw_post(
        crowd.port, "/v1/voice", {"Authorization": "Bearer june_not-a-key"}, 20_000_000
    )
    assert " 401 " in status and took < 2


def test_nul_and_control_characters_never_reach_the_database(crowd, database_url):
    key = make_key(database_url, f"nul-{uuid.uuid4().hex[:8]}")
    with httpx.Client(base_url=crowd.url, headers=bearer(key), timeout=60) as c:
        r = c.post("/v1/chat", json={"text": "Hello\x00 there\x07?"})
        assert r.status_code == 200, r.text
        assert r.json()["transcript"] == "Hello there?"
        r = c.post("/v1/chat", json={"text": "Hello", "request_id": "a\x00b"})
        assert r.status_code == 422 and "request_id" in r.text
        r = c.post(
            "/v1/documents",
            json={"title": "N\x00UL", "text": "Body\x00 text.", "source": "s\x00rc"},
        )
        assert r.status_code == 201, r.text
        assert (r.json()["title"], r.json()["source"]) == ("NUL", "src")
        r = c.post(
            "/v1/chat",
            json={
                "messages": [{"role": "user", "content": "hi\x00"}],
                "max_tokens": 2,
                "stop": ["\x00"],
            },
        )
        assert r.status_code == 200, r.text
        assert c.get("/health").status_code == 200


def test_tts_work_is_capped_before_it_starts(crowd, database_url):
    key = make_key(database_url, f"tts-{uuid.uuid4().hex[:8]}")
    with httpx.Client(base_url=crowd.url, headers=bearer(key), timeout=60) as c:
        start = time.monotonic()
        r = c.post("/v1/speak", json={"text": ("1" * 40 + " ") * 120})
        assert r.status_code == 413, r.text
        assert "to say" in r.json()["detail"] and time.monotonic() - start < 3
        r = c.post("/v1/speak", json={"text": "It costs 12 dollars.", "format": "wav"})
        assert r.status_code == 200 and r.content[:4] == b"RIFF"


def garbage() -> dict[str, tuple[bytes, int]]:
    rng = np.random.default_rng(1)
    clicks = np.zeros(16000 * 3, np.float32)
    clicks[::8000] = 0.9
    speechlike = wav_bytes((rng.standard_normal(16000 * 3) * 0.2).astype(np.float32))
    return {
        "truncated": (speechlike[:300], 422),
        "8 Hz": (wav_bytes(np.zeros(4000, np.float32), rate=8), 400),
        "white noise": (speechlike, 422),
        "clicks": (wav_bytes(clicks), 422),
        "silence": (wav_bytes(np.zeros(16000 * 2, np.float32)), 422),
        "empty": (b"", 400),
        "not audio": (b"%PDF-1.4 this is not audio at all" * 10, 415),
    }


@pytest.mark.parametrize("name", list(garbage()))
def test_garbage_audio_is_refused_and_nothing_is_stored(crowd, database_url, name):
    user = f"junk-{uuid.uuid4().hex[:8]}"
    key = make_key(database_url, user)
    data, expected = garbage()[name]
    request_id = "junk-" + name.replace(" ", "-")
    with httpx.Client(base_url=crowd.url, headers=bearer(key), timeout=60) as c:
        r = c.post("/v1/voice", files={"file": ("q.wav", data)}, data={"request_id": request_id})
        assert r.status_code == expected, (name, r.text)
        assert r.json()["detail"]
        again = c.post(
            "/v1/voice", files={"file": ("q.wav", data)}, data={"request_id": request_id}
        )
        assert again.status_code == expected  # the id was not used up by the failure
    assert count_turns(database_url, user) == 0


def test_a_client_that_hangs_up_cancels_its_work(crowd, database_url):
    key = make_key(database_url, f"gone-{uuid.uuid4().hex[:8]}")

    def disconnects() -> float:
        metrics = httpx.get(f"{crowd.url}/metrics", headers=bearer(key)).text
        for line in metrics.splitlines():
            if line.startswith("june_client_disconnects_total "):
                return float(line.split()[1])
        return 0.0

    before = disconnects()
    body = {  # plain greedy: SmolLM2 counts on for all 400 tokens (its default stops sooner)
        "messages": [{"role": "user", "content": "Count slowly to five hundred."}],
        "max_tokens": 400,
        "temperature": 0.0,
        "repetition_penalty": 1.0,
    }
    with pytest.raises(httpx.ReadTimeout):  # a JSON request, not a stream: we hang up
        httpx.post(f"{crowd.url}/v1/chat", json=body, headers=bearer(key), timeout=1.0)
    deadline = time.monotonic() + 10
    while disconnects() <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert disconnects() == before + 1
    start = time.monotonic()  # the LLM is free again: a short answer comes quickly
    r = httpx.post(
        f"{crowd.url}/v1/chat",
        headers=bearer(key),
        timeout=60,
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
    )
    assert r.status_code == 200 and time.monotonic() - start < 10


def test_the_callers_own_passage_survives_a_crowd_of_other_users_chunks(crowd, database_url):
    """2,000 chunks of another user, each nearer the query than the caller's document."""
    from sqlalchemy import create_engine

    from orchestrator.db.engine import sqlalchemy_url

    owner = f"mine-{uuid.uuid4().hex[:8]}"
    key = make_key(database_url, owner)
    other = f"crowd-{uuid.uuid4().hex[:8]}"
    query = "Where does the Zorbit team keep the spare projector?"
    with httpx.Client(base_url=crowd.url, headers=bearer(key), timeout=60) as c:
        mine = c.post(
            "/v1/documents",
            json={
                "title": "Projector",
                "text": "The spare projector is in cupboard B7 on the third floor.",
            },
        )
        assert mine.status_code == 201
        vector = np.asarray(asyncio.run(embed_one(crowd, query)))
    rng = np.random.default_rng(7)
    engine = create_engine(sqlalchemy_url(database_url))
    doc_id = uuid.uuid4()
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO documents (id, title, n_chars, content_sha256, owner_id) "
                    "VALUES (:id, 'Crowd', 1, 'x', :o)"
                ),
                {"id": doc_id, "o": other},
            )
            rows = []
            for i in range(2000):
                v = vector + rng.normal(0, 0.01, vector.shape)
                rows.append(
                    {
                        "d": doc_id,
                        "o": i,
                        "t": f"noise {i}",
                        "e": "[" + ",".join(f"{x:.6f}" for x in v / np.linalg.norm(v)) + "]",
                    }
                )
            conn.execute(
                text(
                    "INSERT INTO chunks (document_id, ordinal, text, embedding) "
                    "VALUES (:d, :o, :t, CAST(:e AS vector))"
                ),
                rows,
            )
        with httpx.Client(base_url=crowd.url, headers=bearer(key), timeout=60) as c:
            hits = c.post("/v1/search", json={"query": query, "top_k": 3}).json()["results"]
        assert hits and hits[0]["document_id"] == mine.json()["id"], hits
        assert all(h["title"] != "Crowd" for h in hits)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM documents WHERE id = :id"), {"id": doc_id})
        engine.dispose()


async def embed_one(server: LiveServer, query: str) -> list[float]:
    from orchestrator.triton.client import TritonGateway

    gateway = TritonGateway(server.app.state.settings.triton_grpc_url)
    try:
        return (await gateway.embed([query]))[0].tolist()
    finally:
        await gateway.close()
