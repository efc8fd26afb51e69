"""REST API on the real stack: ingest, search, list, delete, and bad input."""

import uuid

import pytest

DOCS = [
    {
        "title": "Office hours",
        "text": "The support desk is open from 9am to 5pm on weekdays. On Saturdays it opens at 10am.",
    },
    {
        "title": "Parking",
        "text": "Visitors park in the blue garage on Elm Street. The first two hours are free.",
        "source": "facilities.md",
    },
    {"title": "Cafeteria", "text": "The cafeteria serves vegetarian lasagne every Thursday."},
]


@pytest.fixture(scope="module")
def ingested(client):
    ids = []
    for doc in DOCS:
        r = client.post("/v1/documents", json=doc)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["n_chunks"] >= 1
        ids.append(body["id"])
    return dict(zip([d["title"] for d in DOCS], ids, strict=True))


def count_documents(client) -> int:
    r = client.get("/v1/documents", params={"limit": 500})
    assert r.status_code == 200
    return len(r.json()["documents"])


def test_health_reports_both_up(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["triton"], body["database"]) == ("ok", "up", "up")
    assert set(body["models"]) == {"vad", "embed", "asr", "llm", "tts_piper", "tts_piper_stream"}
    assert set(body["models"].values()) == {"up"}


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("where can I leave my car?", "Parking"),
        ("when does the help desk open on Saturday?", "Office hours"),
        ("what food is there on Thursdays?", "Cafeteria"),
    ],
)
def test_relevant_document_ranks_first(client, ingested, query, title):
    r = client.post("/v1/search", json={"query": query, "top_k": 3})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["title"] == title
    assert results[0]["document_id"] == ingested[title]
    scores = [hit["score"] for hit in results]
    assert scores == sorted(scores, reverse=True)


def test_min_score_filters(client, ingested):
    r = client.post("/v1/search", json={"query": "where can I leave my car?", "min_score": 0.3})
    assert [hit["title"] for hit in r.json()["results"]] == ["Parking"]


def test_long_document_is_chunked(client):
    text = " ".join(f"Paragraph {i} talks about topic number {i}." for i in range(200))
    r = client.post("/v1/documents", json={"title": "Long", "text": text})
    assert r.status_code == 201
    doc = r.json()
    assert doc["n_chunks"] > 5
    assert client.delete(f"/v1/documents/{doc['id']}").status_code == 204


def test_list_and_delete(client, ingested):
    extra = client.post("/v1/documents", json={"title": "Temp", "text": "Temporary note."}).json()
    listed = {d["id"]: d for d in client.get("/v1/documents").json()["documents"]}
    assert extra["id"] in listed and ingested["Parking"] in listed
    assert listed[ingested["Parking"]]["source"] == "facilities.md"
    assert client.delete(f"/v1/documents/{extra['id']}").status_code == 204
    assert client.delete(f"/v1/documents/{extra['id']}").status_code == 404
    assert extra["id"] not in {d["id"] for d in client.get("/v1/documents").json()["documents"]}
    r = client.post("/v1/search", json={"query": "Temporary note", "top_k": 50})
    assert extra["id"] not in {hit["document_id"] for hit in r.json()["results"]}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("post", "/v1/documents", {"json": {"title": "t", "text": ""}}, 422),
        ("post", "/v1/documents", {"json": {"title": "t", "text": "   \n\t "}}, 422),
        ("post", "/v1/documents", {"json": {"title": "", "text": "x"}}, 422),
        ("post", "/v1/documents", {"json": {"text": "no title"}}, 422),
        (
            "post",
            "/v1/documents",
            {
                "content": b'{"title": "t", "text": "\xff\xfe bad bytes"}',
                "headers": {"content-type": "application/json"},
            },
            400,
        ),
        (
            "post",
            "/v1/documents",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
        ),
        ("post", "/v1/search", {"json": {"query": "x", "top_k": 0}}, 422),
        ("post", "/v1/search", {"json": {"query": "x", "top_k": 10_000}}, 422),
        ("post", "/v1/search", {"json": {"query": ""}}, 422),
        ("post", "/v1/search", {"json": {"query": "x", "min_score": 7}}, 422),
        ("delete", "/v1/documents/not-a-uuid", {}, 422),
        ("delete", f"/v1/documents/{uuid.uuid4()}", {}, 404),
        ("get", "/v1/documents", {"params": {"limit": 0}}, 422),
    ],
)
def test_bad_input_gets_4xx_and_stores_nothing(client, ingested, method, path, kwargs, status):
    before = count_documents(client)
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["detail"]  # a message, not an empty error
    assert count_documents(client) == before
    assert client.get("/health").status_code == 200


def test_huge_body_is_refused_by_the_configured_limit(client, ingested, settings):
    before = count_documents(client)
    body = b'{"title": "big", "text": "' + b"a" * (50 * 1024 * 1024) + b'"}'
    r = client.post("/v1/documents", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert str(settings.max_request_bytes) in r.json()["detail"]
    assert count_documents(client) == before


def test_streamed_body_without_length_is_refused(client, ingested, settings):
    def chunks():
        for _ in range(settings.max_request_bytes // 65536 + 2):
            yield b"a" * 65536

    r = client.post("/v1/documents", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_sql_injection_is_just_text(client, ingested):
    before = count_documents(client)
    for query in ["'; DROP TABLE documents; --", "1' OR '1'='1", "$$; DELETE FROM chunks; $$"]:
        r = client.post("/v1/search", json={"query": query, "top_k": 5})
        assert r.status_code == 200
    r = client.post("/v1/documents", json={"title": "x'); DROP TABLE chunks;--", "text": "safe"})
    assert r.status_code == 201
    assert count_documents(client) == before + 1
    r = client.post("/v1/search", json={"query": "where can I leave my car?"})
    assert r.json()["results"][0]["title"] == "Parking"
    client.delete(f"/v1/documents/{client.get('/v1/documents').json()['documents'][0]['id']}")


def test_nul_characters_are_stripped_not_a_500(client, ingested):
    r = client.post("/v1/documents", json={"title": "nul", "text": "before\x00after"})
    assert r.status_code == 201
    assert client.delete(f"/v1/documents/{r.json()['id']}").status_code == 204


def test_metrics_are_exposed(client, ingested):
    client.post("/v1/search", json={"query": "parking"})
    text = client.get("/metrics").text
    assert 'june_http_requests_total{method="POST",route="/v1/search",status="200"}' in text
    assert 'june_triton_request_seconds_count{model="embed"}' in text
    assert "june_documents_ingested_total" in text
