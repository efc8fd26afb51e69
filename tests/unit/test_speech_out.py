"""Audio out: sentence splitting, format negotiation and the incremental encoders."""

import asyncio
import io
import wave

import numpy as np
import pytest
from fastapi import HTTPException

from orchestrator.api.routes.speech import choose_format
from orchestrator.audio import OUTPUT_FORMATS, AudioEncoder, decode_audio, encode_audio
from orchestrator.triton.client import Speech
from orchestrator.tts import SentenceSpeaker, split_sentences


def test_split_sentences_keeps_order_and_punctuation():
    text = 'Sure. "Quoted end." Is it ten?  Yes!\nNew line without stop'
    assert split_sentences(text) == [
        "Sure.",
        '"Quoted end."',
        "Is it ten?",
        "Yes!",
        "New line without stop",
    ]
    assert split_sentences("  \n ") == []
    assert split_sentences("Pi is 3.14 exactly.") == ["Pi is 3.14 exactly."]


def test_split_sentences_cuts_long_ones_at_clauses_then_words():
    long = ", ".join(f"clause number {i} goes here" for i in range(20)) + "."
    pieces = split_sentences(long, max_chars=80)
    assert all(len(p) <= 80 for p in pieces)
    assert " ".join(pieces) == long
    words = " ".join(["word"] * 100)
    assert all(len(p) <= 50 for p in split_sentences(words, max_chars=50))
    assert " ".join(split_sentences(words, max_chars=50)) == words


@pytest.mark.parametrize(
    ("requested", "accept", "expected"),
    [
        ("wav", "audio/mpeg", "wav"),  # the body wins
        (None, None, "ogg"),
        (None, "*/*", "ogg"),
        (None, "audio/mpeg", "mp3"),
        (None, "audio/x-wav", "wav"),
        (None, "audio/wav;q=0.5, audio/mpeg;q=0.9", "mp3"),
        (None, "text/html, audio/ogg; codecs=opus", "ogg"),
        (None, "audio/mpeg;q=0, audio/*", "ogg"),
    ],
)
def test_choose_format(requested, accept, expected):
    assert choose_format(requested, accept).name == expected


def test_choose_format_refuses_what_it_cannot_make():
    with pytest.raises(HTTPException) as info:
        choose_format(None, "text/html, application/json")
    assert info.value.status_code == 406


@pytest.fixture(scope="module")
def tone() -> np.ndarray:
    t = np.arange(22050 * 2) / 22050
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", sorted(OUTPUT_FORMATS))
def test_encoded_audio_decodes_to_the_same_length(fmt, tone):
    data = encode_audio(tone, rate=22050, fmt=fmt)
    if fmt == "pcm16":  # raw samples at the voice's rate: no header to decode by
        np.testing.assert_allclose(np.frombuffer(data, "<i2") / 32768, tone, atol=1e-4)
        return
    if fmt == "pcm":  # raw samples at 24 kHz (OpenAI's pcm)
        assert abs(len(data) / 2 / 24000 - 2.0) < 0.01
        return
    back = decode_audio(data, max_seconds=10)
    assert abs(len(back) / 16000 - 2.0) < 0.1  # MP3 pads a frame at most


@pytest.mark.parametrize("fmt", ["ogg", "mp3", "wav"])
def test_encoder_hands_over_bytes_before_the_end(fmt, tone):
    encoder = AudioEncoder(OUTPUT_FORMATS[fmt], 22050)
    first = encoder.write(tone[:22050])
    second = encoder.write(tone[22050:])
    rest = encoder.close()
    assert len(first) > 1000 and len(second) > 1000  # streamable: not all held to the end
    assert abs(len(decode_audio(first + second + rest, max_seconds=10)) / 16000 - 2.0) < 0.1


def test_wav_whole_has_sizes_and_streamed_wav_says_unknown(tone):
    whole = encode_audio(tone, rate=22050, fmt="wav")
    with wave.open(io.BytesIO(whole)) as w:
        assert (w.getframerate(), w.getnframes()) == (22050, len(tone))
    encoder = AudioEncoder(OUTPUT_FORMATS["wav"], 22050)
    head = encoder.write(tone)
    assert head[4:8] == b"\xff\xff\xff\xff"
    assert head[head.find(b"data") + 4 :][:4] == b"\xff\xff\xff\xff"


class VoiceOnTheBench:
    """The two calls SentenceSpeaker makes of the gateway, answering at once with 0.1 s of
    audio a word: whole, or (streamed) the first 0.3 s, then the rest, after ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls: list[tuple[str, str]] = []

    async def synthesize(self, text: str, *, model: str, **_: object) -> Speech:
        self.calls.append((model, text))
        return Speech(np.zeros(len(text.split()) * 1000, np.float32), 10_000)

    async def synthesize_stream(self, text: str, *, model: str, **_: object):
        self.calls.append((model, text))
        samples = len(text.split()) * 1000
        yield Speech(np.zeros(3000, np.float32), 10_000)
        await self.release.wait()
        yield Speech(np.zeros(samples - 3000, np.float32), 10_000)


async def test_first_sentence_streams_and_shares_its_words_among_its_pieces():
    voice = VoiceOnTheBench()
    speaker = SentenceSpeaker(voice, model="whole", stream_model="streamed")  # type: ignore[arg-type]
    first = "one two three four five six seven eight nine ten"
    speaker.add(first)
    speaker.add("And a second sentence.")
    await asyncio.sleep(0.01)
    early = [(text, speech.seconds) async for text, speech in speaker.ready()]
    assert len(early) == 1 and early[0][1] == pytest.approx(0.3)  # before the rest exists
    assert 0 < len(early[0][0].split()) < 10  # its share of the words, never all of them
    # the next sentence waits for the first: beside it, it could overtake it
    assert voice.calls == [("streamed", first)]
    voice.release.set()
    await asyncio.sleep(0.01)
    assert voice.calls == [("streamed", first), ("whole", "And a second sentence.")]
    rest = [(text, speech.seconds) async for text, speech in speaker.drain()]
    assert [s for _, s in rest] == pytest.approx([0.7, 0.4])
    assert " ".join(t for t, _ in early + rest[:1]) == first  # every word once, in order
    assert rest[1][0] == "And a second sentence."


async def test_without_a_stream_model_every_sentence_is_whole():
    voice = VoiceOnTheBench()
    speaker = SentenceSpeaker(voice, model="whole")  # type: ignore[arg-type]
    for sentence in ("First one.", "Second one here."):
        speaker.add(sentence)
    got = [(text, speech.seconds) async for text, speech in speaker.drain()]
    assert got == [("First one.", pytest.approx(0.2)), ("Second one here.", pytest.approx(0.3))]
    assert {model for model, _ in voice.calls} == {"whole"}


async def test_the_first_sentence_runs_alone_even_whole():
    """Sent beside the first sentence, the second can reach the voice model first (Triton's
    ensemble does not keep the order) and delay the first audio: it waits instead."""
    voice = VoiceOnTheBench()
    whole = voice.synthesize

    async def held_first(text: str, **kwargs: object) -> Speech:
        if not voice.calls:
            voice.calls.append(("held", text))
            await voice.release.wait()
            return Speech(np.zeros(1000, np.float32), 10_000)
        return await whole(text, **kwargs)

    voice.synthesize = held_first  # type: ignore[method-assign]
    speaker = SentenceSpeaker(voice, model="whole", ahead=3)  # type: ignore[arg-type]
    for sentence in ("First.", "Second.", "Third."):
        speaker.add(sentence)
    await asyncio.sleep(0.01)
    assert [text for _, text in voice.calls] == ["First."]
    voice.release.set()
    assert [text async for text, _ in speaker.drain()] == ["First.", "Second.", "Third."]
    assert [text for _, text in voice.calls] == ["First.", "Second.", "Third."]
