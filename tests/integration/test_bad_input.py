"""The README's bad-input table, asserted cell by cell on the real stack.

Each class of bad input is sent to each endpoint that takes it; every answer is the
status in the table, with a message. Afterwards nothing stored is lost and the server
still answers.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import pytest

from tests.conftest import bearer, make_key, wav_bytes


def wav(seconds: float, *, rate: int = 16000, noise: float = 0.0) -> bytes:
    rng = np.random.default_rng(5)
    return wav_bytes(rng.standard_normal(int(seconds * rate)) * noise, rate)


NOISE = wav(3, noise=0.2)
AUDIO_INPUTS: dict[str, bytes] = {
    "empty file": b"",
    "not audio (a PDF)": b"%PDF-1.4 " + b"x" * 2000,
    "corrupt audio (OGG header, then zeros)": b"OggS" + bytes(600),
    "truncated WAV (300 bytes)": NOISE[:300],
    "header claims 8 Hz": wav(500, rate=8),
    "white noise, no speech": NOISE,
    "longer than the limit": wav(130, rate=8000),
}

# class -> {endpoint: status}; "-" where the endpoint does not take that input
TABLE: dict[str, dict[str, int]] = {
    "no API key": {"voice": 401, "chat": 401, "speak": 401, "transcribe": 401, "documents": 401},
    "unknown key": {"voice": 401, "chat": 401, "speak": 401, "transcribe": 401, "documents": 401},
    "body is not JSON / not a form": {
        "voice": 422, "chat": 400, "speak": 400, "transcribe": 422, "documents": 400
    },
    "body over JUNE_MAX_REQUEST_BYTES": {
        "voice": 413, "chat": 413, "speak": 413, "transcribe": 413, "documents": 413
    },
    "body is not UTF-8": {"chat": 400, "speak": 400, "documents": 400},
    "wrong JSON type (text is a number)": {"chat": 422, "speak": 422, "documents": 422},
    "NUL and control characters in text": {"chat": 200, "speak": 200, "documents": 201},
    "shared document from a non-admin key": {"documents": 403},
    "NUL in request_id": {"voice": 422, "chat": 422},
    "empty or blank text": {"chat": 422, "speak": 422, "documents": 422},
    "field out of range": {"voice": 422, "chat": 422, "speak": 422, "documents": 422},
    "text over its limit": {"chat": 422, "speak": 413, "documents": 413},
    "text that is huge when spoken (digits)": {"speak": 413},
    "nothing speakable (emoji only)": {"speak": 422, "chat": 200},
    "unknown conversation": {"voice": 404, "chat": 404},
    "unsupported language": {"transcribe": 422},
    "no acceptable audio type (Accept)": {"speak": 406},
    **{
        name: {
            "voice": {"empty file": 400, "not audio (a PDF)": 415,
                      "corrupt audio (OGG header, then zeros)": 415,
                      "header claims 8 Hz": 400, "longer than the limit": 413}.get(name, 422),
            "transcribe": {"empty file": 400, "not audio (a PDF)": 415,
                           "corrupt audio (OGG header, then zeros)": 415,
                           "header claims 8 Hz": 400,
                           "longer than the limit": 413}.get(name, 200),
        }
        for name in AUDIO_INPUTS
    },
}  # fmt: skip

PATHS = {
    "voice": "/v1/voice",
    "chat": "/v1/chat",
    "speak": "/v1/speak",
    "transcribe": "/v1/transcribe",
    "documents": "/v1/documents",
}
UPLOADS = {"voice", "transcribe"}


def ok_body(endpoint: str) -> dict:
    return {
        "chat": {"text": "Hello"},
        "speak": {"text": "Hello.", "format": "wav"},
        "documents": {"title": "T", "text": "Some text."},
    }.get(endpoint, {})


def request_for(case: str, endpoint: str) -> Callable[[httpx.Client], httpx.Response]:
    path = PATHS[endpoint]
    upload = {"file": ("q.wav", wav(1, noise=0.2))}
    if case in AUDIO_INPUTS:
        data = AUDIO_INPUTS[case]
        return lambda c: c.post(path, files={"file": ("q.bin", data)})
    if case == "no API key":
        return lambda c: c.post(path, headers={"authorization": ""}, json=ok_body(endpoint))
    if case == "unknown key":
        bad = bearer("june_not-a-key")
        return lambda c: c.post(path, headers=bad, json=ok_body(endpoint))
    if case == "body is not JSON / not a form":
        headers = {"content-type": "application/json"}
        return lambda c: c.post(path, content=b"{not json", headers=headers)
    if case == "body is not UTF-8":
        headers = {"content-type": "application/json"}
        return lambda c: c.post(path, content=b'{"text": "caf\xff"}', headers=headers)
    if case == "wrong JSON type (text is a number)":
        return lambda c: c.post(path, json={**ok_body(endpoint), "text": 42})
    if case == "shared document from a non-admin key":

        def shared(c: httpx.Client) -> httpx.Response:
            key = make_key(c.app.state.settings.database_url or "", "not-admin")
            body = {"title": "T", "text": "x", "shared": True}
            return c.post(path, json=body, headers=bearer(key))

        return shared
    if case == "body over JUNE_MAX_REQUEST_BYTES":
        return lambda c: c.post(path, content=b"x" * (9 * 1024 * 1024))
    if case == "NUL and control characters in text":
        body = {
            "chat": {"text": "Hel\x00lo\x07"},
            "speak": {"text": "Hel\x00lo.", "format": "wav"},
            "documents": {"title": "N\x00", "text": "Body\x00.", "source": "s\x00"},
        }[endpoint]
        return lambda c: c.post(path, json=body)
    if case == "NUL in request_id":
        if endpoint in UPLOADS:
            return lambda c: c.post(path, files=upload, data={"request_id": "a\x00b"})
        return lambda c: c.post(path, json={"text": "hi", "request_id": "a\x00b"})
    if case == "empty or blank text":
        body = {"chat": {"text": "  "}, "speak": {"text": " \n"},
                "documents": {"title": "T", "text": "\x00 "}}[endpoint]  # fmt: skip
        return lambda c: c.post(path, json=body)
    if case == "field out of range":
        if endpoint == "voice":
            return lambda c: c.post(path, files=upload, data={"format": "flac"})
        body = {"chat": {"text": "hi", "max_tokens": 0},
                "speak": {"text": "Hi.", "pace": 9},
                "documents": {"title": "x" * 301, "text": "t"}}[endpoint]  # fmt: skip
        return lambda c: c.post(path, json=body)
    if case == "text over its limit":
        body = {"chat": {"text": "word " * 1000}, "speak": {"text": "word " * 1001},
                "documents": {"title": "T", "text": "x" * 1_000_001}}[endpoint]  # fmt: skip
        return lambda c: c.post(path, json=body)
    if case == "text that is huge when spoken (digits)":
        return lambda c: c.post(path, json={"text": ("1" * 40 + " ") * 120})
    if case == "nothing speakable (emoji only)":
        return lambda c: c.post(path, json={"text": "🙂🙂🙂"})
    if case == "unknown conversation":
        convo = "00000000-0000-4000-8000-000000000000"
        if endpoint == "voice":
            return lambda c: c.post(path, files=upload, data={"conversation_id": convo})
        return lambda c: c.post(path, json={"text": "hi", "conversation_id": convo})
    if case == "unsupported language":
        return lambda c: c.post(path, files=upload, data={"language": "xx"})
    if case == "no acceptable audio type (Accept)":
        return lambda c: c.post(path, json={"text": "Hi."}, headers={"accept": "image/png"})
    raise KeyError(case)


CELLS = [(case, endpoint) for case, row in TABLE.items() for endpoint in row]


@pytest.fixture(scope="module")
def kept(client) -> str:
    r = client.post("/v1/documents", json={"title": "Kept", "text": "This must survive."})
    assert r.status_code == 201
    return r.json()["id"]


@pytest.mark.parametrize(("case", "endpoint"), CELLS, ids=[f"{e}: {c}" for c, e in CELLS])
def test_bad_input_gets_the_tables_status(client, kept, case, endpoint):
    response = request_for(case, endpoint)(client)
    assert response.status_code == TABLE[case][endpoint], response.text[:300]
    if response.status_code >= 400:
        assert response.json()["detail"]  # a message, not just a code


def test_after_all_that_nothing_stored_is_lost_and_the_server_serves(client, kept):
    ids = [d["id"] for d in client.get("/v1/documents", params={"limit": 500}).json()["documents"]]
    assert kept in ids
    assert client.get("/health").status_code == 200
    assert client.post("/v1/chat", json={"text": "Are you still there?"}).status_code == 200


def markdown_table() -> str:
    """The table for the README (``python -m tests.integration.test_bad_input``)."""
    endpoints = list(PATHS)
    lines = [
        "| input | " + " | ".join(PATHS[e] for e in endpoints) + " |",
        "|---|" + "---|" * len(endpoints),
    ]
    for case, row in TABLE.items():
        lines.append(f"| {case} | " + " | ".join(str(row.get(e, "-")) for e in endpoints) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown_table() + "\n")
