"""Text normalisation and the Piper frontend, run without a Triton server."""

import numpy as np
import pytest

from benchmarks.speech import piper_voice_paths
from tests.conftest import load_backend_module

tts_text = load_backend_module("tts_piper_frontend", "tts_text")
piper_frontend = load_backend_module("tts_piper_frontend", "piper_frontend")


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("It costs $12.50.", "It costs twelve dollars and fifty cents."),
        ("Only $1 left", "Only one dollar left"),
        ("£3.05 each", "three pounds and five pence each"),
        ("We raised €3 million", "We raised three million euros"),
        ("See you at 10:30 am", "See you at ten thirty a m"),
        ("Wake me at 7:05", "Wake me at seven oh five"),
        ("The 3rd time", "The third time"),
        ("On 2024-03-05 it snowed", "On March fifth, twenty twenty-four it snowed"),
        ("Due March 15, 2025", "Due March fifteenth, twenty twenty-five"),
        ("Born in 1999", "Born in nineteen ninety-nine"),
        ("It is 2.5 km", "It is two point five kilometres"),
        ("It is 5°C and 1 km away", "It is five degrees Celsius and one kilometre away"),
        ("Drive at 30 mph", "Drive at thirty miles per hour"),
        ("1,234 people", "one thousand, two hundred and thirty-four people"),
        ("Up 15%", "Up fifteen percent"),
        ("Dr. Smith and Mrs. Jones", "Doctor Smith and Missus Jones"),
        ("221 Baker St. is famous", "two hundred and twenty-one Baker Street is famous"),
        ("St. Louis", "Saint Louis"),
        ("Go to https://www.example.com/docs now", "Go to example dot com now"),
        ("Mail anna.lee@example.org", "Mail anna dot lee at example dot org"),
        ("Cats & dogs", "Cats and dogs"),
        ("e.g. this", "for example this"),
    ],
)
def test_normalise_says_what_is_written(written, spoken):
    assert tts_text.normalise(written) == spoken


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("😀🎉👍", ""),  # emoji only: nothing to say
        ("\x00\x07hello\x1b world\u200b!", "hello world !"),  # control and format characters
        ("", ""),
        ("★ ☆ → ∑", ""),  # symbols only
    ],
)
def test_normalise_drops_what_cannot_be_said(text, expected):
    assert tts_text.normalise(text) == expected
    assert tts_text.is_speakable(expected) is bool(expected)


def test_normalise_keeps_other_scripts():
    assert tts_text.normalise("שלום עולם") == "שלום עולם"  # espeak reads or skips them


@pytest.fixture(scope="module")
def frontend():
    _, config = piper_voice_paths()
    return piper_frontend.PiperFrontend(config, max_chars=500)


def test_piper_frontend_matches_piper_for_plain_text(frontend):
    from piper import PiperVoice

    model, config = piper_voice_paths()
    voice = PiperVoice.load(model, config_path=config)
    text = "Hello there. How are you today? I am fine."
    batch = frontend(text)
    expected = [voice.phonemes_to_ids(p) for p in voice.phonemize(text)]
    assert batch.lengths.tolist() == [len(e) for e in expected]
    assert batch.ids.tolist() == [i for e in expected for i in e]
    assert batch.speaker.tolist() == [-1]  # single-speaker voice


def test_piper_frontend_pace_scales_length(frontend):
    normal, fast = frontend("Hi.", pace=1.0), frontend("Hi.", pace=2.0)
    assert fast.scales[1] == pytest.approx(normal.scales[1] / 2)
    with pytest.raises(ValueError, match="PACE"):
        frontend("Hi.", pace=3.0)


def test_piper_frontend_limits_and_empty(frontend):
    with pytest.raises(piper_frontend.TextTooLong, match="limit is 500"):
        frontend("a" * 501)
    empty = frontend("🎉🎉")
    assert empty.ids.size == 0 and empty.lengths.size == 0


def test_vits_equals_piper_standalone_without_noise(frontend):
    from piper import PiperVoice, SynthesisConfig

    model, config = piper_voice_paths()
    voice = PiperVoice.load(model, config_path=config)
    text = "The train leaves at noon. Do not be late."
    no_noise = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    expected = np.concatenate([c.audio_float_array for c in voice.synthesize(text, no_noise)])
    vits = load_backend_module("tts_piper_vits", "vits").VitsVoice(model)
    batch = frontend(text)
    scales = np.array([0.0, batch.scales[1], 0.0], dtype=np.float32)
    audio = vits(batch.ids, batch.lengths, scales, -1)
    assert audio.shape == expected.shape
    np.testing.assert_allclose(audio, expected, atol=1e-4)


def test_vits_rejects_inconsistent_lengths():
    model, _ = piper_voice_paths()
    vits = load_backend_module("tts_piper_vits", "vits").VitsVoice(model)
    ids = np.array([1, 2, 3], dtype=np.int64)
    with pytest.raises(ValueError, match="do not add up"):
        vits(ids, np.array([5], dtype=np.int64), np.ones(3, np.float32), -1)
    assert vits(ids[:0], ids[:0], np.ones(3, np.float32), -1).size == 0
