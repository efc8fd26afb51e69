"""The Telegram bot: the real python-telegram-bot client against a fake Bot API on
127.0.0.1 (the only fake in the chain), with real Triton, Postgres and the voice turn."""

import itertools
import re
import time

import pytest
from fastapi.testclient import TestClient

from benchmarks.speech import encode_upload, piper_wav, to_16k
from orchestrator.api.app import create_app
from tests.conftest import free_port, settings_for
from tests.fake_telegram import FakeTelegram

ALLOWED, OTHER, STRANGER = 1111, 1112, 9999
_ids = itertools.count(int(time.time()) % 100000 * 10)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def update(user: int, **message) -> dict:
    return {
        "update_id": next(_ids),
        "message": {
            "message_id": next(_ids),
            "date": int(time.time()),
            "chat": {"id": user, "type": "private"},
            "from": {"id": user, "is_bot": False, "first_name": "Ann"},
            **message,
        },
    }


def command(user: int, text: str) -> dict:
    name = text.split()[0]
    return update(
        user, text=text, entities=[{"type": "bot_command", "offset": 0, "length": len(name)}]
    )


def voice_update(fake: FakeTelegram, user: int, data: bytes, duration: int = 3) -> dict:
    file_id = f"voice-{next(_ids)}"
    fake.add_file(file_id, data, f"voice/{file_id}.oga")
    voice = {"file_id": file_id, "file_unique_id": file_id + "-u", "duration": duration,
             "mime_type": "audio/ogg", "file_size": len(data)}  # fmt: skip
    return update(user, voice=voice)


@pytest.fixture(scope="module")
def fake():
    server = FakeTelegram(free_port())
    server.start()
    yield server
    server.stop()


def bot_settings(triton, database_url, fake, **extra):
    values = {
        "telegram_bot_token": "123456:TEST",
        "telegram_api_url": fake.api_url,
        "telegram_file_url": fake.file_url,
        "telegram_allowed_users": [ALLOWED, OTHER],
    }
    return settings_for(triton, database_url, **{**values, **extra})


@pytest.fixture(scope="module")
def polling_bot(triton, database_url, fake):
    with TestClient(create_app(bot_settings(triton, database_url, fake))) as client:
        assert client.app.state.bot is not None
        yield client


@pytest.fixture(scope="module")
def question_ogg() -> bytes:
    """A spoken question as a Telegram voice note: OGG/Opus, made by the test."""
    speech = to_16k(piper_wav("What is the capital of France?"))
    return encode_upload(speech, fmt="ogg", codec="libopus")


def test_voice_message_gets_a_spoken_reply(polling_bot, fake, question_ogg, client):
    fake.push(voice_update(fake, ALLOWED, question_ogg))
    voice = fake.wait_for(ALLOWED, "sendVoice")[-1]
    actions = [
        s.params.get("action") for s in fake.sent_to(ALLOWED) if s.method == "sendChatAction"
    ]
    assert "record_voice" in actions
    audio = voice.files["voice"]
    assert audio.startswith(b"OggS") and b"OpusHead" in audio[:200]
    caption = voice.params["caption"]
    assert caption
    heard = client.post(
        "/v1/transcribe", files={"file": ("reply.ogg", audio)}, data={"language": "en"}
    ).json()["text"]
    overlap = len(words(heard) & words(caption)) / max(1, len(words(caption)))
    assert overlap >= 0.6, (heard, caption)


def test_text_message_gets_a_text_reply(polling_bot, fake):
    before = len(fake.sent_to(ALLOWED))
    fake.push(update(ALLOWED, text="Hello, who are you?"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = [s for s in fake.sent_to(ALLOWED)[before:] if s.method == "sendMessage"]
        if new:
            assert new[0].params["text"].strip()
            return
        time.sleep(0.1)
    raise AssertionError("no text reply")


def test_document_is_ingested_listed_and_forgotten(polling_bot, fake):
    note = b"Team notes. The quarterly offsite is in Porto on the twelfth of May."
    fake.add_file("doc-1", note, "documents/notes.txt")
    doc = {"file_id": "doc-1", "file_unique_id": "doc-1-u", "file_name": "notes.txt",
           "mime_type": "text/plain", "file_size": len(note)}  # fmt: skip
    before = len(fake.wait_for(ALLOWED, "sendMessage", 0))
    fake.push(update(ALLOWED, document=doc))
    added = fake.wait_for(ALLOWED, "sendMessage", before + 1)[-1].params["text"]
    assert added.startswith("Added notes.txt")
    doc_id = re.search(r"\(([0-9a-f-]{36})\)", added).group(1)
    fake.push(command(ALLOWED, "/docs"))
    listed = fake.wait_for(ALLOWED, "sendMessage", before + 2)[-1].params["text"]
    assert doc_id in listed and "notes.txt" in listed
    fake.add_file("doc-2", b"\x00binary", "documents/x.exe")
    bad = {"file_id": "doc-2", "file_unique_id": "doc-2-u", "file_name": "x.exe", "file_size": 7}
    fake.push(update(ALLOWED, document=bad))
    assert "only" in fake.wait_for(ALLOWED, "sendMessage", before + 3)[-1].params["text"]
    fake.push(command(ALLOWED, f"/forget {doc_id}"))
    assert fake.wait_for(ALLOWED, "sendMessage", before + 4)[-1].params["text"] == "Deleted."


def test_reset_forgets_the_conversation(polling_bot, fake):
    before = len(fake.wait_for(ALLOWED, "sendMessage", 0))
    fake.push(command(ALLOWED, "/reset"))
    reply = fake.wait_for(ALLOWED, "sendMessage", before + 1)[-1].params["text"]
    assert "forgotten" in reply


def outcomes(client) -> dict[str, float]:
    """``june_bot_updates_total`` by outcome, as /metrics shows it (one registry per
    process: the bot's app counts, any app shows it)."""
    text = client.get("/metrics").text
    found = re.findall(r'^june_bot_updates_total\{bot="tg",outcome="(\w+)"\} (\S+)$', text, re.M)
    return {outcome: float(n) for outcome, n in found}


def test_stranger_and_corrupt_voice_get_polite_answers(polling_bot, fake, client):
    counted = outcomes(client)
    fake.push(update(STRANGER, text="hi"))
    assert (
        fake.wait_for(STRANGER, "sendMessage")[-1].params["text"] == "Sorry, this June is private."
    )
    before = len(fake.wait_for(ALLOWED, "sendMessage", 0))
    fake.push(voice_update(fake, ALLOWED, b"OggS" + bytes(300)))
    reply = fake.wait_for(ALLOWED, "sendMessage", before + 1)[-1].params["text"]
    assert "couldn't play that audio" in reply
    fake.push(voice_update(fake, ALLOWED, b"OggS", duration=3600))
    reply = fake.wait_for(ALLOWED, "sendMessage", before + 2)[-1].params["text"]
    assert "a bit long" in reply
    now = outcomes(client)  # each update counted once, by what became of it
    for outcome in ("not_allowed", "bad_audio", "too_long"):
        assert now.get(outcome, 0) == counted.get(outcome, 0) + 1, (outcome, counted, now)


def test_webhook_checks_the_secret_and_answers_a_duplicate_once(
    triton, database_url, fake, question_ogg
):
    user = 2222
    settings = bot_settings(
        triton,
        database_url,
        fake,
        telegram_allowed_users=[user],
        telegram_webhook_url="https://june.example/telegram/webhook",
        telegram_webhook_secret="s3cret",
    )
    with TestClient(create_app(settings)) as client:
        assert client.app.state.bot.app.updater is None  # no polling in webhook mode
        hello = update(user, text="Hello there!")
        wrong = client.post("/telegram/webhook", json=hello,
                            headers={"X-Telegram-Bot-Api-Secret-Token": "nope"})  # fmt: skip
        assert wrong.status_code == 403
        # no secret: 403, not 400 for the body that is not JSON: it was never read
        assert client.post("/telegram/webhook", content=b"{not json").status_code == 403
        ok = {"X-Telegram-Bot-Api-Secret-Token": "s3cret"}
        assert client.post("/telegram/webhook", json=hello, headers=ok).status_code == 200
        fake.wait_for(user, "sendMessage", 1)
        assert client.post("/telegram/webhook", json=hello, headers=ok).status_code == 200
        time.sleep(5)  # a redelivered update must not be answered again
        assert len([s for s in fake.sent_to(user) if s.method == "sendMessage"]) == 1
        spoken = voice_update(fake, user, question_ogg)  # the voice flow, by webhook
        assert client.post("/telegram/webhook", json=spoken, headers=ok).status_code == 200
        voice = fake.wait_for(user, "sendVoice")[-1]
        assert voice.files["voice"].startswith(b"OggS") and voice.params["caption"]


def test_a_failure_inside_the_turn_gets_an_apology_and_the_bot_goes_on(polling_bot, fake, caplog):
    turn = polling_bot.app.state.bot.channel.turns
    real = turn.generate

    async def broken(messages, deadline):
        raise RuntimeError("the LLM fell over")
        yield ""  # an async generator, like the real one

    turn.generate = broken
    try:
        before = len(fake.wait_for(ALLOWED, "sendMessage", 0))
        failing = update(ALLOWED, text="Tell me something.")
        fake.push(failing)
        reply = fake.wait_for(ALLOWED, "sendMessage", before + 1)[-1].params["text"]
        assert reply.startswith("Sorry, something went wrong")
        assert f"update {failing['update_id']} failed" in caplog.text
    finally:
        turn.generate = real
    fake.push(update(ALLOWED, text="Are you back?"))
    assert fake.wait_for(ALLOWED, "sendMessage", before + 2)[-1].params["text"].strip()


def pdf_bomb() -> bytes:
    """A one-page PDF of a few kB whose content stream is 3 million text operators:
    minutes of pure-Python parsing for a text extractor."""
    import zlib

    stream = zlib.compress(b"BT /F1 12 Tf " + b"(a) Tj " * 3_000_000 + b"ET", 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R "
        b"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer << /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF" % (len(objects) + 1, xref)
    return bytes(out)


def test_a_pdf_bomb_costs_one_worker_and_everyone_else_is_still_served(polling_bot, fake):
    """While one user's PDF bomb is read: /health answers fast, another user is answered
    first, and the bomb's sender gets their replies in the order they wrote."""
    settings = polling_bot.app.state.bot.settings
    settings.pdf_timeout_s, previous = 4.0, settings.pdf_timeout_s
    try:
        bomb = pdf_bomb()
        fake.add_file("bomb-1", bomb, "documents/bomb.pdf")
        doc = {"file_id": "bomb-1", "file_unique_id": "bomb-1-u", "file_name": "report.pdf",
               "mime_type": "application/pdf", "file_size": len(bomb)}  # fmt: skip
        before = len(fake.wait_for(ALLOWED, "sendMessage", 0))
        others = len(fake.wait_for(OTHER, "sendMessage", 0))
        fake.push(update(ALLOWED, document=doc))
        fake.push(update(ALLOWED, text="And after that?"))  # waits for the bomb's reply
        fake.push(update(OTHER, text="Hello, are you there?"))  # does not wait
        slowest = 0.0
        deadline = time.monotonic() + 30
        while len(fake.sent_to(ALLOWED)) <= before and time.monotonic() < deadline:
            start = time.monotonic()
            assert polling_bot.get("/health").status_code == 200
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.2)
        replies = fake.wait_for(ALLOWED, "sendMessage", before + 2)
        assert replies[before].params["text"] == "That PDF took too long to read."
        assert replies[before + 1].params["text"].strip()  # then the text, in order
        assert slowest < 1.0, slowest
        other = fake.wait_for(OTHER, "sendMessage", others + 1)[others]
        assert other.at < replies[before].at  # the other user was not held up by the bomb
    finally:
        settings.pdf_timeout_s = previous


def test_voice_longer_than_declared_is_refused_from_the_file_itself(polling_bot, fake):
    import numpy as np

    rng = np.random.default_rng(3)
    long_audio = (rng.standard_normal(16000 * 130) * 0.1).astype(np.float32)  # 130 s
    lying = encode_upload(long_audio, fmt="ogg", codec="libopus")
    before = len(fake.wait_for(ALLOWED, "sendMessage", 0))
    fake.push(voice_update(fake, ALLOWED, lying, duration=3))  # says 3 s
    reply = fake.wait_for(ALLOWED, "sendMessage", before + 1)[-1].params["text"]
    assert "a bit long" in reply
    big = b"OggS" + bytes(3 * 1024 * 1024)  # over telegram_max_voice_bytes: not downloaded
    fake.push(voice_update(fake, ALLOWED, big, duration=3))
    assert "a bit long" in fake.wait_for(ALLOWED, "sendMessage", before + 2)[-1].params["text"]
