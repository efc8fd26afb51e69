"""Request ids on the real app: taken from X-Request-ID or made, returned, and on every log
line of the request and its turn; a turn's log carries no words of the user's and no key."""

import json
import logging
import re
import uuid

import pytest

from orchestrator.log import REQUEST_ID, TURN_ID, TextFormatter, json_formatter
from tests.conftest import bearer, make_key

SECRET = "the vault code is marigold-4471"


def test_an_id_is_made_or_taken_and_always_returned(client):
    made = client.get("/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert client.get("/health").headers["x-request-id"] != made  # one per request
    given = "trace-7f3a:span.2"
    assert client.get("/health", headers={"X-Request-ID": given}).headers["x-request-id"] == given
    for bad in ("has spaces in it", "x" * 129, "ünïcode".encode(), ""):
        back = client.get("/health", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", back), bad  # a bad one is replaced, never echoed
    # errors carry it too: a refused key
    refused = client.get(
        "/v1/documents", headers={"Authorization": "Bearer nope", "X-Request-ID": given}
    )
    assert refused.status_code == 401 and refused.headers["x-request-id"] == given


def test_a_turns_log_lines_carry_its_ids_and_none_of_its_words(client, database_url, caplog):
    key = make_key(database_url, f"logged-{uuid.uuid4().hex[:6]}")
    request_id = f"trace-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.DEBUG):
        r = client.post(
            "/v1/chat",
            json={"text": f"Please remember this: {SECRET}.", "request_id": "turn-42"},
            headers={**bearer(key), "X-Request-ID": request_id},
        )
    assert r.status_code == 200, r.text
    mine = [rec for rec in caplog.records if getattr(rec, "request_id", None) == request_id]
    answered = [rec for rec in mine if rec.getMessage().startswith("turn answered")]
    assert answered, [rec.getMessage() for rec in mine]
    assert answered[0].turn == "turn-42" and answered[0].levelno == logging.INFO
    loud = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.INFO]
    reply = r.json()["reply"]
    for line in loud:
        assert "marigold" not in line and key not in line, line
        assert not reply or reply not in line, line


def test_json_and_text_lines_carry_the_ids():
    record_before = logging.getLogger("june.test").makeRecord(
        "june.test", logging.INFO, __file__, 1, "outside %s", ("any",), None
    )
    assert record_before.request_id is None
    request, turn = REQUEST_ID.set("req-1"), TURN_ID.set("turn-1")
    try:
        record = logging.getLogRecordFactory()(
            "june.test", logging.INFO, __file__, 1, "hello %s", ("there",), None
        )
    finally:
        REQUEST_ID.reset(request)
        TURN_ID.reset(turn)
    line = json.loads(json_formatter().format(record))
    assert line["message"] == "hello there" and line["level"] == "INFO"
    assert line["request_id"] == "req-1" and line["turn"] == "turn-1"
    assert line["logger"] == "june.test" and "time" in line
    text = TextFormatter().format(record)
    assert text.endswith("june.test: hello there [request_id=req-1 turn=turn-1]")
    assert "[" not in TextFormatter().format(record_before)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_cli_logs_in_the_configured_format(fmt, tmp_path):
    from tests.integration.test_cli import run

    proc = run("triton", env={"JUNE_MODEL_REPOSITORY": str(tmp_path / "none"),
                              "JUNE_DATA_DIR": str(tmp_path), "JUNE_LOG_FORMAT": fmt})  # fmt: skip
    assert proc.returncode == 1
    line = [x for x in proc.stderr.splitlines() if x.strip()][-1]
    if fmt == "json":
        assert json.loads(line)["level"] == "ERROR"
    else:
        assert "ERROR" in line and not line.startswith("{")
