"""Silero VAD (real weights from the silero-vad package): frames, segments, the export."""

from pathlib import Path

import numpy as np
import pytest

from benchmarks.speech import clips
from exporters.common import ExportError
from exporters.vad import export_vad
from tests.conftest import load_backend_module

silero = load_backend_module("vad", "silero")
FRAME_S = silero.FRAME_S


@pytest.fixture(scope="module")
def vad(cache_dir):
    return silero.SileroVad(export_vad(cache_dir=cache_dir) / "vad.onnx")


def test_segments_follow_the_hysteresis_rule():
    frames = np.array([0.1] * 10 + [0.9] * 20 + [0.4] * 2 + [0.9] * 10 + [0.1] * 20, np.float32)
    # 0.4 is above the off threshold (0.35): the dip does not end the speech
    assert silero.speech_segments(frames, pad_s=0) == [(10 * FRAME_S, 42 * FRAME_S)]
    dip = frames.copy()
    dip[30:34] = 0.0  # 128 ms of silence ends the first segment
    assert silero.speech_segments(dip, pad_s=0) == [
        (10 * FRAME_S, 30 * FRAME_S),
        (34 * FRAME_S, 42 * FRAME_S),
    ]
    dip[34:40] = 0.0  # and what is left after it (64 ms) is too short to be speech
    assert silero.speech_segments(dip, pad_s=0) == [(10 * FRAME_S, 30 * FRAME_S)]
    # a blip shorter than min_speech_s is not speech
    blip = np.zeros(50, np.float32)
    blip[20:23] = 0.95
    assert silero.speech_segments(blip) == []
    # padding stays inside the clip and merges neighbours
    edge = np.array([0.9] * 20 + [0.0] * 5 + [0.9] * 20, np.float32)
    assert silero.speech_segments(edge, pad_s=0.2, duration_s=45 * FRAME_S) == [(0.0, 45 * FRAME_S)]


def test_real_speech_is_found_and_silence_noise_and_tones_are_not(vad):
    _, speech = clips()[0]
    pad = np.zeros(16000, np.float32)
    rng = np.random.default_rng(0)
    inputs = [
        np.concatenate([pad, speech, pad]),  # 1 s of silence each side
        clips()[15][1],  # espeak-ng, a robotic voice
        np.zeros(16000 * 2, np.float32),
        (0.05 * rng.standard_normal(16000 * 3)).astype(np.float32),
        (0.3 * np.sin(np.arange(16000 * 3) * 2 * np.pi * 440 / 16000)).astype(np.float32),
        np.zeros(100, np.float32),  # shorter than one frame
    ]
    found = [silero.speech_segments(p, pad_s=0.2) for p in vad.probabilities(inputs)]
    speech_s = len(speech) / 16000
    (start, end), *rest = found[0]
    assert not rest
    assert 0.6 <= start <= 1.0 and 1.0 + speech_s - 0.3 <= end <= 1.0 + speech_s + 0.5
    assert len(found[1]) >= 1
    assert found[2:] == [[], [], [], []]


def test_batched_clips_get_what_each_gets_alone(vad):
    a, b = clips()[1][1], clips()[16][1]
    together = vad.probabilities([a, b])
    np.testing.assert_allclose(together[0], vad.probabilities([a])[0], atol=1e-5)
    np.testing.assert_allclose(together[1], vad.probabilities([b])[0], atol=1e-5)


def test_export_refuses_what_is_not_a_silero_graph(tmp_path, cache_dir, embedder_export):
    with pytest.raises(ExportError, match="Silero VAD"):
        export_vad(tmp_path / "missing.onnx", cache_dir=cache_dir)
    with pytest.raises(ExportError, match="Silero VAD v5 graph takes"):
        export_vad(embedder_export / "model.onnx", cache_dir=tmp_path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="not an ONNX model"):
        export_vad(garbage, cache_dir=tmp_path)
    assert Path(export_vad(cache_dir=cache_dir) / "export.json").is_file()


def test_a_stream_sent_in_pieces_gets_what_it_gets_whole(vad):
    speech = np.concatenate([np.zeros(8000, np.float32), clips()[2][1]])
    frames = len(speech) // silero.FRAME
    whole = vad.probabilities([speech])[0]
    state = np.zeros((1, silero.STATE_SIZE), np.float32)
    pieces = []
    for start in range(0, frames, 7):  # 7 frames at a time, the last piece shorter
        chunk = speech[start * silero.FRAME : min(start + 7, frames) * silero.FRAME]
        probs, state = vad.step([chunk], state)
        pieces.append(probs[0])
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)
    # a piece shorter than a frame leaves the state as it was
    _, same = vad.step([np.zeros(100, np.float32)], state)
    np.testing.assert_array_equal(same, state)
