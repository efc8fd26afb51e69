"""Every refusal is counted once by its cause (june_refused_total), whichever layer gave it:
the key gate, the body limit, validation, a route's own check."""

import re
import uuid

from tests.conftest import bearer, make_key


def refused(client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^june_refused_total\{cause="(\d+)"\} (\S+)$', text, re.M)
    }


def test_each_refusal_is_counted_once_by_its_cause(client, settings, database_url):
    user = bearer(make_key(database_url, f"plain-{uuid.uuid4().hex[:6]}"))  # not an admin
    before = refused(client)
    answers = {
        "401": client.get("/v1/documents", headers=bearer("june_not_a_key")),
        "403": client.post(
            "/v1/documents", json={"title": "t", "text": "x", "shared": True}, headers=user
        ),
        "413": client.post("/v1/chat", content=b"x" * (settings.max_request_bytes + 1),
                           headers={"content-type": "application/json"}),
        "415": client.post("/v1/transcribe", files={"file": ("notes.txt", b"plain text, not audio")}),
        "422": client.post("/v1/chat", json={"messages": [], "max_tokens": 0}),
        "400": client.post("/v1/chat", content=b"{not json", headers={"content-type": "application/json"}),
    }  # fmt: skip
    for cause, answer in answers.items():
        assert answer.status_code == int(cause), (cause, answer.status_code, answer.text)
    after = refused(client)
    for cause in answers:
        assert after.get(cause, 0) - before.get(cause, 0) == 1, cause  # once, not twice
    assert client.get("/health").status_code == 200
    assert refused(client) == after  # an answer that refuses nothing counts nothing
