"""The Discord bot: the real discord.py client against a fake Discord (REST, gateway and
CDN) on 127.0.0.1, the only fake in the chain, with real Triton, Postgres and the turn."""

import base64
import re
import time

import pytest
from fastapi.testclient import TestClient

from benchmarks.speech import encode_upload, piper_wav, to_16k
from orchestrator.api.app import create_app
from tests.conftest import free_port, settings_for
from tests.fake_discord import BOT, GUILD_CHANNEL_ID, GUILD_ID, TOKEN, FakeDiscord

ALLOWED, STRANGER, MEMBER = 3111, 9998, 3222  # MEMBER: allowed only through the server
VOICE_FLAG, EPHEMERAL = 1 << 13, 1 << 6


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def dm(user: int) -> int:
    return 80_000 + user  # each user's DM channel with the bot


@pytest.fixture(scope="module")
def fake():
    server = FakeDiscord(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def discord_app(triton, database_url, fake):
    settings = settings_for(
        triton,
        database_url,
        discord_bot_token=TOKEN,
        discord_api_url=fake.api_url,
        discord_gateway_url=fake.gateway_url,
        discord_allowed_users=[ALLOWED],
        discord_allowed_guilds=[GUILD_ID],
    )
    with TestClient(create_app(settings)) as client:
        assert client.app.state.discord is not None
        assert fake.identified.wait(30), "discord.py never identified on the fake gateway"
        yield client


@pytest.fixture(scope="module")
def bot(discord_app):
    return discord_app.app.state.discord


@pytest.fixture(scope="module")
def question_ogg() -> bytes:
    """A spoken question as Discord's clients record it: OGG/Opus."""
    speech = to_16k(piper_wav("What is the capital of France?"))
    return encode_upload(speech, fmt="ogg", codec="libopus")


def voice_message(fake: FakeDiscord, user: int, data: bytes, **where) -> dict:
    attachment = fake.attachment(data, "voice-message.ogg", "audio/ogg", voice_seconds=2.5)
    where = where or {"channel_id": dm(user)}
    return fake.message(user, attachments=[attachment], flags=VOICE_FLAG, **where)


def replies(fake: FakeDiscord, channel: int, count: int) -> list[str]:
    return [s.payload.get("content") or "" for s in fake.wait_for(channel, count)]


def outcomes(client) -> dict[str, float]:
    """``june_bot_updates_total`` for Discord by outcome, as /metrics shows it."""
    text = client.get("/metrics").text
    found = re.findall(
        r'^june_bot_updates_total\{bot="discord",outcome="(\w+)"\} (\S+)$', text, re.M
    )
    return {outcome: float(n) for outcome, n in found}


def test_slash_commands_are_registered(discord_app, fake):
    registered = [s for s in fake.sent if s.route == "commands"][-1].payload["commands"]
    by_name = {c["name"]: c for c in registered}
    assert set(by_name) == {"reset", "docs", "forget", "voice"}
    mode = by_name["voice"]["options"][0]
    assert mode["name"] == "mode" and {c["value"] for c in mode["choices"]} == {"on", "off"}
    assert by_name["forget"]["options"][0]["required"] is True


def test_voice_message_gets_a_voice_message_reply(discord_app, fake, question_ogg, client):
    asked = voice_message(fake, ALLOWED, question_ogg)
    fake.dispatch("MESSAGE_CREATE", asked)
    voice, text = fake.wait_for(dm(ALLOWED), 2)[-2:]
    assert str(dm(ALLOWED)) in fake.typing  # "June is typing..." meanwhile
    # The voice message: the flag, one OGG/Opus file, its length and a waveform, no text.
    assert voice.payload["flags"] == VOICE_FLAG and not voice.payload.get("content")
    [(name, audio)] = voice.files
    assert name.endswith(".ogg") and audio.startswith(b"OggS") and b"OpusHead" in audio[:200]
    [meta] = voice.payload["attachments"]
    assert 0.5 < meta["duration_secs"] < 60
    wave = base64.b64decode(meta["waveform"])
    assert 1 <= len(wave) <= 256 and max(wave) == 255 and min(wave) < 128
    assert abs(len(wave) - meta["duration_secs"] * 10) <= 1  # a tenth of a second a point
    # The reply's text beside it, as a reply to the question; it is what the voice says.
    said = text.payload["content"]
    assert said and str(text.payload["message_reference"]["message_id"]) == asked["id"]
    heard = client.post(
        "/v1/transcribe", files={"file": ("reply.ogg", audio)}, data={"language": "en"}
    ).json()["text"]
    overlap = len(words(heard) & words(said)) / max(1, len(words(said)))
    assert overlap >= 0.6, (heard, said)


def test_text_in_a_server_is_answered_only_when_june_is_mentioned(discord_app, fake):
    before = len(fake.sent_to(GUILD_CHANNEL_ID))
    where = {"channel_id": GUILD_CHANNEL_ID, "guild_id": GUILD_ID}
    fake.dispatch("MESSAGE_CREATE", fake.message(MEMBER, "Hello everyone!", **where))
    mention = f"<@{BOT['id']}>"
    asked = fake.message(MEMBER, f"{mention} Hello, who are you?", mentions=[BOT], **where)
    fake.dispatch("MESSAGE_CREATE", asked)
    reply = fake.wait_for(GUILD_CHANNEL_ID, before + 1)[-1]
    time.sleep(1)
    assert len(fake.sent_to(GUILD_CHANNEL_ID)) == before + 1  # the first went unanswered
    assert str(reply.payload["message_reference"]["message_id"]) == asked["id"]
    assert reply.payload["content"].strip()
    assert not reply.payload.get("flags", 0) & VOICE_FLAG


def interact(fake: FakeDiscord, user: int, name: str, **options: str) -> str:
    """A slash command in the user's DM; the bot's (ephemeral) answer."""
    interaction = fake.command(user, name, channel_id=dm(user), options=options)
    fake.dispatch("INTERACTION_CREATE", interaction)
    answer = fake.wait_for(interaction["id"], route="interaction", timeout_s=30)[-1].payload
    assert answer["type"] == 4 and answer["data"]["flags"] & EPHEMERAL
    return answer["data"]["content"]


def test_document_and_slash_commands(discord_app, fake):
    note = b"Team notes. The quarterly offsite is in Porto on the twelfth of May."
    attachment = fake.attachment(note, "notes.txt", "text/plain; charset=utf-8")
    before = len(fake.sent_to(dm(ALLOWED)))
    fake.dispatch(
        "MESSAGE_CREATE", fake.message(ALLOWED, attachments=[attachment], channel_id=dm(ALLOWED))
    )
    added = replies(fake, dm(ALLOWED), before + 1)[-1]
    assert added.startswith("Added notes.txt")
    doc_id = re.search(r"\(([0-9a-f-]{36})\)", added).group(1)
    listed = interact(fake, ALLOWED, "docs")
    assert doc_id in listed and "notes.txt" in listed
    assert interact(fake, ALLOWED, "forget", document="not-an-id").startswith("Usage")
    assert interact(fake, ALLOWED, "forget", document=doc_id) == "Deleted."
    assert interact(fake, ALLOWED, "docs") == "You have no documents yet."
    assert "forgotten" in interact(fake, ALLOWED, "reset")
    # /voice on: a text message gets a voice message too; off: text again
    assert interact(fake, ALLOWED, "voice", mode="on") == "I'll answer text by voice too."
    before = len(fake.sent_to(dm(ALLOWED)))
    fake.dispatch("MESSAGE_CREATE", fake.message(ALLOWED, "Say hello.", channel_id=dm(ALLOWED)))
    voice, text = fake.wait_for(dm(ALLOWED), before + 2)[-2:]
    assert voice.payload["flags"] == VOICE_FLAG and voice.files[0][1].startswith(b"OggS")
    assert text.payload["content"].strip()
    assert interact(fake, ALLOWED, "voice", mode="off") == "Text answers only."
    # a file June cannot read is refused by its name, before it is downloaded
    exe = fake.attachment(b"MZ\x90\x00", "tool.exe", "application/octet-stream")
    fake.dispatch(
        "MESSAGE_CREATE", fake.message(ALLOWED, attachments=[exe], channel_id=dm(ALLOWED))
    )
    assert "only" in replies(fake, dm(ALLOWED), before + 3)[-1]


def test_strangers_and_corrupt_audio_get_polite_answers(discord_app, fake, client):
    counted = outcomes(client)
    fake.dispatch("MESSAGE_CREATE", fake.message(STRANGER, "hi", channel_id=dm(STRANGER)))
    assert replies(fake, dm(STRANGER), 1)[-1] == "Sorry, this June is private."
    assert interact(fake, STRANGER, "docs") == "Sorry, this June is private."
    # a member of an allowed server is answered there, but not in a DM
    fake.dispatch("MESSAGE_CREATE", fake.message(MEMBER, "hi", channel_id=dm(MEMBER)))
    assert replies(fake, dm(MEMBER), 1)[-1] == "Sorry, this June is private."
    before = len(fake.sent_to(dm(ALLOWED)))
    fake.dispatch("MESSAGE_CREATE", voice_message(fake, ALLOWED, b"OggS" + bytes(300)))
    assert "couldn't play that audio" in replies(fake, dm(ALLOWED), before + 1)[-1]
    wrong_codec = fake.attachment(b"\x00\x01" * 500, "note.mp3", "audio/mpeg")
    fake.dispatch(
        "MESSAGE_CREATE", fake.message(ALLOWED, attachments=[wrong_codec], channel_id=dm(ALLOWED))
    )
    assert "couldn't play that audio" in replies(fake, dm(ALLOWED), before + 2)[-1]
    # Discord says how big a file is: one over the limit is refused without fetching it
    huge = {**fake.attachment(b"OggS", "long.ogg", "audio/ogg"), "size": 50 * 1024 * 1024}
    fake.dispatch(
        "MESSAGE_CREATE", fake.message(ALLOWED, attachments=[huge], channel_id=dm(ALLOWED))
    )
    assert "a bit long" in replies(fake, dm(ALLOWED), before + 3)[-1]
    assert not any(name.endswith("long.ogg") for name in fake.downloads)
    now = outcomes(client)  # each message counted once, by what became of it
    assert now.get("not_allowed", 0) == counted.get("not_allowed", 0) + 3, (counted, now)
    assert now.get("bad_audio", 0) == counted.get("bad_audio", 0) + 2, (counted, now)
    assert now.get("too_long", 0) == counted.get("too_long", 0) + 1, (counted, now)


def test_a_redelivered_message_is_answered_once(discord_app, fake, bot):
    asked = fake.message(ALLOWED, "What is two plus two?", channel_id=dm(ALLOWED))
    before = len(fake.sent_to(dm(ALLOWED)))
    fake.dispatch("MESSAGE_CREATE", asked)
    fake.wait_for(dm(ALLOWED), before + 1)
    fake.dispatch("MESSAGE_CREATE", asked)  # the gateway sends it again
    # ... and after a dropped connection that discord.py resumes, to a process that has
    # forgotten it: the stored turn (the message id is its request id) still says no.
    connections = fake.connections
    fake.drop_connection()
    deadline = time.monotonic() + 30
    while fake.connections == connections and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake.connections > connections, "discord.py did not reconnect"
    bot._seen.clear()
    time.sleep(1)
    fake.dispatch("MESSAGE_CREATE", asked)
    time.sleep(5)
    assert len(fake.sent_to(dm(ALLOWED))) == before + 1
    # and the bot still answers new messages after all that
    fake.dispatch("MESSAGE_CREATE", fake.message(ALLOWED, "Thanks!", channel_id=dm(ALLOWED)))
    assert replies(fake, dm(ALLOWED), before + 2)[-1].strip()


def test_a_bad_token_leaves_the_api_serving(triton, database_url, fake, caplog):
    settings = settings_for(
        triton,
        database_url,
        discord_bot_token="wrong",
        discord_api_url=fake.api_url,
        discord_gateway_url=fake.gateway_url,
    )
    with TestClient(create_app(settings)) as client:
        assert client.app.state.discord is None
        assert client.get("/health").status_code == 200
    assert "the Discord bot did not start" in caplog.text


def test_an_attachment_that_cannot_be_fetched_gets_an_apology(discord_app, fake, caplog):
    gone = fake.attachment(b"OggS", "gone.ogg", "audio/ogg")
    gone["url"] = gone["url"].rsplit("/", 1)[0] + "/no-such-file"  # the CDN answers 404
    before = len(fake.sent_to(dm(ALLOWED)))
    asked = fake.message(ALLOWED, attachments=[gone], channel_id=dm(ALLOWED))
    fake.dispatch("MESSAGE_CREATE", asked)
    assert replies(fake, dm(ALLOWED), before + 1)[-1].startswith("Sorry, something went wrong")
    assert f"message {asked['id']} failed" in caplog.text
    fake.dispatch("MESSAGE_CREATE", fake.message(ALLOWED, "Still there?", channel_id=dm(ALLOWED)))
    assert replies(fake, dm(ALLOWED), before + 2)[-1].strip()
