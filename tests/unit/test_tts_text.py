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


@pytest.fixture(scope="module")
def piper_export(cache_dir):
    from exporters.piper import export_piper

    return export_piper(None, cache_dir=cache_dir)


def served_voice(piper_export, gain: float | None = None):
    from exporters.common import ExportInfo

    vits = load_backend_module("tts_piper_vits", "vits")
    gain = gain if gain is not None else float(ExportInfo.read(piper_export).extra["gain"])
    return vits.VitsVoice(piper_export / "front.onnx", piper_export / "decoder.onnx", gain=gain)


def no_noise(frontend, text: str):
    batch = frontend(text)
    return batch, np.array([0.0, batch.scales[1], 0.0], dtype=np.float32)


def test_vits_equals_piper_standalone_without_noise(frontend, piper_export):
    """The split graphs at gain 1 are Piper's voice: each sentence equals piper-tts's raw
    audio (before its peak normalisation), wherever the limiter leaves it alone."""
    from piper import PiperVoice, SynthesisConfig

    model, config = piper_voice_paths()
    voice = PiperVoice.load(model, config_path=config)
    text = "The train leaves at noon. Do not be late."
    plain = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)
    expected = np.concatenate([c.audio_float_array for c in voice.synthesize(text, plain)])
    batch, scales = no_noise(frontend, text)
    audio = served_voice(piper_export, gain=1.0)(batch.ids, batch.lengths, scales, -1)
    assert audio.shape == expected.shape
    assert np.abs(expected).max() < 0.9  # below the limiter's knee: nothing limited
    np.testing.assert_allclose(audio, expected, atol=1e-4)


def test_streamed_sentence_equals_the_whole(frontend, piper_export):
    """The first 24 frames come as their own piece, and the pieces join into exactly the
    sentence decoded at once: the decoder's context covers its receptive field."""
    voice = served_voice(piper_export)
    batch, scales = no_noise(frontend, "Parking is free after six, and the garage is open.")
    whole = voice(batch.ids, batch.lengths, scales, -1)
    pieces = list(voice.stream(batch.ids, batch.lengths, scales, -1, first_frames=24))
    assert [p.size for p in pieces[:1]] == [24 * 256]
    assert len(pieces) == 2 * batch.lengths.size
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)


def test_voice_gain_is_fixed_and_limited(frontend, piper_export):
    """One gain for every sentence (a quiet sentence stays quieter than a loud one, unlike
    Piper's per-sentence peak rule), and the limiter keeps every sample inside full scale."""
    vits = load_backend_module("tts_piper_vits", "vits")
    quiet_gain, loud_gain = served_voice(piper_export, gain=1.0), served_voice(piper_export, 4.0)
    batch, scales = no_noise(frontend, "Yes.")
    quiet = quiet_gain(batch.ids, batch.lengths, scales, -1)
    loud = loud_gain(batch.ids, batch.lengths, scales, -1)
    assert np.abs(loud).max() <= 1.0 < 4.0 * np.abs(quiet).max()
    below = np.abs(4.0 * quiet) < vits.KNEE
    np.testing.assert_allclose(loud[below], 4.0 * quiet[below], atol=1e-4)
    curve = vits.limit(np.array([-0.95, 0.5, 0.9, 0.95, 10.0], dtype=np.float32))
    assert curve[1:3].tolist() == pytest.approx([0.5, 0.9])  # the identity up to the knee
    assert 0.9 < curve[3] < 0.95 and 0.99 < curve[4] <= 1.0  # then bent towards full scale
    assert curve[0] == -curve[3]  # symmetric


def test_export_gain_puts_typical_peaks_below_full_scale(piper_export):
    from exporters.common import ExportInfo
    from exporters.piper import TARGET_PEAK

    info = ExportInfo.read(piper_export)
    assert info.exporter_version == "2"
    assert {"front.onnx", "decoder.onnx"} <= set(info.artifacts)
    gain = float(info.extra["gain"])
    assert 1.0 < gain < 4.0  # raw Piper peaks sit around -5 dBFS: the voice is lifted
    assert TARGET_PEAK / gain < 1.0


def test_vits_rejects_inconsistent_lengths(piper_export):
    vits = served_voice(piper_export)
    ids = np.array([1, 2, 3], dtype=np.int64)
    with pytest.raises(ValueError, match="do not add up"):
        vits(ids, np.array([5], dtype=np.int64), np.ones(3, np.float32), -1)
    assert vits(ids[:0], ids[:0], np.ones(3, np.float32), -1).size == 0
