"""The live-voice pieces that need no server: turn detection, what was heard, audio in."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from benchmarks.speech import opus_packets
from orchestrator.realtime import FRAME_S, Activity, AudioInput, SessionError, VoiceActivity
from orchestrator.turn import Spoken, heard_text, until


def frames(seconds: float, p: float) -> list[float]:
    return [p] * round(seconds / FRAME_S)


def test_turn_detection_starts_pauses_resumes_and_ends():
    vad = VoiceActivity(pause_s=0.256, end_s=0.512)
    probs = (
        frames(0.32, 0.1)  # frames 0-9: quiet
        + frames(0.064, 0.9)  # a click: too short to be speech
        + frames(0.32, 0.0)
        + frames(0.64, 0.9)  # speech from frame 22
        + frames(0.288, 0.1)  # a pause of 9 frames (from 42)
        + frames(0.32, 0.8)  # speech again (from 51)
        + frames(0.64, 0.2)  # silence from 61: the end after 16 frames
    )
    events = vad.push(np.array(probs, np.float32))
    assert events == [
        Activity("start", 22),
        Activity("pause", 42),
        Activity("resume", 51),
        Activity("pause", 61),
        Activity("end", 61),
    ]
    assert not vad.speaking


def test_turn_detection_holds_across_pieces_and_keeps_speech_through_dips():
    vad = VoiceActivity(pause_s=0.25, end_s=0.5)
    probs = np.array(frames(0.5, 0.9) + frames(0.064, 0.4) + frames(0.5, 0.9), np.float32)
    events = [e for piece in np.array_split(probs, 7) for e in vad.push(piece)]
    assert events == [Activity("start", 0)]  # 0.4 is above the off threshold: no pause
    assert vad.speaking
    vad.reset()
    assert not vad.speaking and vad.push(np.zeros(40, np.float32)) == []


def test_what_was_heard_is_whole_sentences_then_a_share_of_the_next():
    said = [Spoken("Paris is the capital.", 2.0, 22050), Spoken("It is in France too.", 2.5, 22050)]
    assert heard_text(said, 0.0) == ""
    assert heard_text(said, 1.0) == "Paris is"
    assert heard_text(said, 2.0) == "Paris is the capital."
    assert heard_text(said, 3.0) == "Paris is the capital. It is"
    assert heard_text(said, 60.0) == "Paris is the capital. It is in France too."
    assert heard_text([], 5.0) == ""


def test_until_stops_at_once_and_cancels_what_it_waits_for():
    cancelled = asyncio.Event()

    async def slow() -> object:
        yield 1
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield 2

    async def main() -> list[int]:
        stop = asyncio.Event()
        got = []
        asyncio.get_running_loop().call_later(0.05, stop.set)
        async for item in until(slow(), stop):
            got.append(item)
        return got

    assert asyncio.run(asyncio.wait_for(main(), 5)) == [1]
    assert cancelled.is_set()


def test_pcm16_input_survives_odd_splits():
    samples = (np.sin(np.arange(1000) / 7) * 0.5).astype(np.float32)
    data = (samples * 32768).astype("<i2").tobytes()
    reader = AudioInput("pcm16")
    back = np.concatenate([reader.decode(data[i : i + 333]) for i in range(0, len(data), 333)])
    np.testing.assert_allclose(back, samples, atol=1e-4)


def test_opus_input_is_one_packet_a_message():
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)).astype(np.float32)
    reader = AudioInput("opus")
    back = np.concatenate([reader.decode(p) for p in opus_packets(tone)])
    assert abs(len(back) - 16000) < 16000 * 0.05
    assert np.sqrt(np.mean(back[2000:-2000] ** 2)) > 0.1
    with pytest.raises(SessionError, match="not an Opus packet"):
        reader.decode(b"\xff\x00garbage")


def test_a_recording_grows_in_place_and_forgets_the_oldest():
    from orchestrator.realtime import Recording

    rec = Recording()
    samples = np.arange(40_000, dtype=np.float32)  # past the first buffer (1 s)
    for start in range(0, len(samples), 333):
        rec.append(samples[start : start + 333])
    assert rec.base == 0 and rec.end == 40_000
    np.testing.assert_array_equal(rec.clip(100, 200), samples[100:200])
    rec.keep_last(1000)
    assert (rec.base, rec.end) == (39_000, 40_000)
    np.testing.assert_array_equal(rec.clip(0, 39_010), samples[39_000:39_010])  # forgotten: cut
    clip = rec.clip(39_990, 50_000)
    rec.append(np.zeros(5, np.float32))
    rec.keep_last(2)
    np.testing.assert_array_equal(clip, samples[39_990:])  # a copy: later changes leave it be
    assert rec.clip(10, 5).size == 0
