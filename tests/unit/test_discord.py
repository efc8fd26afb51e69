"""The Discord bot's own parts: the voice message it sends, what counts as audio, who it
answers, and the bounded per-user order its messages are handled in."""

import asyncio
import base64

import numpy as np
import pytest

from orchestrator.audio import SAMPLE_RATE, encode_audio
from orchestrator.channel import Refused, UserOrder
from orchestrator.config import Settings
from orchestrator.discord_bot import JuneDiscord, VoiceFile, is_audio, waveform


def ogg(samples: np.ndarray) -> bytes:
    return encode_audio(samples.astype(np.float32), rate=SAMPLE_RATE, fmt="ogg")


def tone(seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return amplitude * np.sin(2 * np.pi * 220 * t)


def test_the_waveform_is_a_tenth_of_a_second_a_byte_loudest_255():
    seconds, wave = waveform(ogg(np.concatenate([tone(1.0), np.zeros(SAMPLE_RATE)])))
    assert 1.9 < seconds < 2.2
    assert len(wave) in (round(seconds * 10), round(seconds * 10) + 1)
    assert max(wave[:9]) == 255 and min(wave[:9]) > 200  # the tone
    assert max(wave[-8:]) < 10  # the silence after it


def test_long_and_silent_audio_have_bounded_waveforms():
    assert len(waveform(ogg(tone(40.0)))[1]) == 256  # Discord's most
    seconds, wave = waveform(ogg(np.zeros(SAMPLE_RATE // 2)))
    assert seconds > 0.4 and set(wave) == {0}  # no division by zero


def test_a_voice_file_carries_its_length_and_waveform():
    data = ogg(tone(1.2))
    entry = VoiceFile(data).to_dict(0)
    assert entry["id"] == 0 and entry["filename"] == "voice-message.ogg"
    assert 1.1 < entry["duration_secs"] < 1.4
    assert base64.b64decode(entry["waveform"]) == waveform(data)[1]


class Attachment:
    def __init__(self, filename: str, content_type: str | None, voice: bool = False) -> None:
        self.filename, self.content_type, self.voice = filename, content_type, voice

    def is_voice_message(self) -> bool:
        return self.voice


@pytest.mark.parametrize(
    ("attachment", "audio"),
    [
        (Attachment("voice-message.ogg", "audio/ogg", voice=True), True),
        (Attachment("memo.bin", "audio/mpeg"), True),
        (Attachment("Recording.M4A", None), True),
        (Attachment("notes.txt", "text/plain"), False),
        (Attachment("report.pdf", "application/pdf"), False),
    ],
)
def test_what_counts_as_audio(attachment, audio):
    assert is_audio(attachment) is audio  # type: ignore[arg-type]


def bot(**settings: object) -> JuneDiscord:
    return JuneDiscord(Settings(discord_bot_token="t", **settings), turns=None)  # type: ignore[arg-type]


def test_allowlists_of_users_and_servers():
    anyone = bot()
    assert anyone._allowed(1, None) and anyone._allowed(1, 99)
    listed = bot(discord_allowed_users=[1], discord_allowed_guilds=[50])
    assert listed._allowed(1, None) and listed._allowed(1, 77)  # a listed user, anywhere
    assert listed._allowed(2, 50)  # anyone in a listed server, there
    assert not listed._allowed(2, None)  # ... but not in a DM
    assert not listed._allowed(2, 77)


def test_a_message_seen_before_is_not_handled_twice():
    june = bot()
    assert june._first_time(10) and not june._first_time(10)
    for message_id in range(11, 11 + 5000):
        june._first_time(message_id)
    assert len(june._seen) <= 4096  # bounded: the oldest are forgotten
    assert june._first_time(10)


def test_settings_read_comma_separated_ids(monkeypatch):
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "abc")
    monkeypatch.setenv("JUNE_DISCORD_ALLOWED_USERS", "11, 22,33")
    monkeypatch.setenv("JUNE_DISCORD_ALLOWED_GUILDS", "[44]")
    settings = Settings()
    assert settings.discord_bot_token and settings.discord_bot_token.get_secret_value() == "abc"
    assert settings.discord_allowed_users == [11, 22, 33]
    assert settings.discord_allowed_guilds == [44]
    monkeypatch.setenv("DISCORD_BOT_TOKEN", " ")
    assert Settings().discord_bot_token is None


async def test_user_order_runs_users_at_once_each_in_order_and_refuses_beyond_its_bound():
    order = UserOrder(concurrent=3, waiting=1)
    log: list[str] = []
    release = asyncio.Event()

    async def message(user: int, name: str) -> None:
        async with order.turn(user):
            log.append(f"start {name}")
            await release.wait()
            log.append(f"end {name}")

    tasks = [
        asyncio.create_task(message(1, "a1")),
        asyncio.create_task(message(2, "b1")),
        asyncio.create_task(message(1, "a2")),  # a slot is free, but a1 is not done
        asyncio.create_task(message(3, "c1")),
    ]
    await asyncio.sleep(0.05)
    assert log == ["start a1", "start b1", "start c1"]
    with pytest.raises(Refused) as refused:  # 3 running + 1 waiting: the fifth is refused
        async with order.turn(4):
            pass
    assert refused.value.outcome == "busy"
    release.set()
    await asyncio.gather(*tasks)
    assert log.index("end a1") < log.index("start a2")
    assert order._messages == 0 and len(order._users) == 0  # nothing left behind
