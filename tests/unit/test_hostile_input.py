"""Hostile input without servers: text fields, audio that is not speech, TTS work caps,
Whisper's loop guard, error classification, and what the reaper stops."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from orchestrator.api.schemas import ChatIn, DocumentIn, clean_request_id, strip_controls
from orchestrator.audio import CorruptAudio, decode_audio, speech_seconds
from orchestrator.triton.client import (
    ModelRequestError,
    ModelUnhealthy,
    TritonInferenceError,
    TritonUnavailable,
    classify,
    stage_of,
)
from orchestrator.tts import spoken_seconds
from tests.conftest import load_backend_module, wav_bytes


def test_control_characters_are_cleaned_from_every_text_field():
    assert strip_controls("a\x00b\x07c\td\ne\x7f\x9f") == "abc\td\ne"
    body = ChatIn(text="Where\x00 is it?", system="be\x00 brief", stop=["\x00", "x\x00"])
    assert body.text == "Where is it?" and body.system == "be brief" and body.stop == ["x"]
    doc = DocumentIn(title="T\x00", text="body\x00", source="file\x00.txt")
    assert (doc.title, doc.text, doc.source) == ("T", "body", "file.txt")
    with pytest.raises(ValueError):
        DocumentIn(title="\x00\x00", text="x")  # nothing left once cleaned


@pytest.mark.parametrize("bad", ["a\x00b", "with space", "", "x" * 129, "tab\there", "é"])
def test_request_ids_with_control_characters_are_refused(bad):
    with pytest.raises(ValueError, match="request_id"):
        clean_request_id(bad)
    with pytest.raises(ValueError):
        ChatIn(text="hi", request_id=bad)
    assert clean_request_id("tg-123_abc:1") == "tg-123_abc:1"


def test_noise_clicks_and_silence_are_not_speech_but_speech_is():
    rng = np.random.default_rng(0)
    seconds = 3
    silence = np.zeros(16000 * seconds, np.float32)
    noise = (rng.standard_normal(16000 * seconds) * 0.3).astype(np.float32)
    clicks = silence.copy()
    clicks[::16000] = 0.9
    assert speech_seconds(silence) == 0
    assert speech_seconds(noise) < 0.2  # steady noise sets its own floor
    assert speech_seconds(clicks) < 0.2
    assert speech_seconds(np.zeros(100, np.float32)) == 0  # a few samples
    # syllables: 200 ms bursts of a voiced tone with pauses, over quiet background noise
    t = np.arange(16000 * seconds) / 16000
    envelope = (np.sin(2 * np.pi * 2.5 * t) > 0).astype(np.float32)
    voiced = 0.3 * np.sin(2 * np.pi * 180 * t) * envelope + 0.003 * rng.standard_normal(t.size)
    assert speech_seconds(voiced.astype(np.float32)) > 1.0


def test_audio_that_claims_an_absurd_sample_rate_is_refused():
    with pytest.raises(CorruptAudio, match="8 Hz"):
        decode_audio(wav_bytes(np.zeros(4000, np.float32), rate=8), max_seconds=600)


def test_tts_work_is_capped_by_what_the_text_becomes_when_spoken():
    tts_text = load_backend_module("tts_piper_frontend", "tts_text")
    digits = ("1" * 40 + " ") * 120  # the digit bomb: 4,920 characters
    words = tts_text.normalise(digits[:82])
    assert words.split()[:3] == ["one", "one", "one"]  # long numbers read digit by digit
    assert spoken_seconds(digits) > 600  # over the default cap: 413 before any work
    assert spoken_seconds("The office opens at 9:30 am.") < 5
    with pytest.raises(tts_text.TextTooLong, match="when spoken"):
        tts_text.check_spoken("x" * 101, max_chars=100)
    with pytest.raises(tts_text.TextTooLong, match="phonemes"):
        tts_text.check_sentence(tts_text.MAX_SENTENCE_PHONEMES + 1)


def test_whisper_loops_are_not_transcripts():
    rules = load_backend_module("asr_whisper", "whisper_rules")
    assert rules.compression_ratio("you " * 20) > rules.COMPRESSION_RATIO_THRESHOLD
    sentence = "Which floor is the Zorbit printer on, and who changes its toner?"
    assert rules.compression_ratio(sentence) < rules.COMPRESSION_RATIO_THRESHOLD


def test_triton_errors_are_classified_by_status_code():
    assert isinstance(classify("tts", "StatusCode.INVALID_ARGUMENT", "tts: bad PACE"),
                      ModelRequestError)  # fmt: skip
    assert str(classify("tts", "StatusCode.INVALID_ARGUMENT", "tts: bad PACE")) == "bad PACE"
    assert isinstance(classify("asr", "StatusCode.INTERNAL", "boom"), TritonInferenceError)
    assert isinstance(classify("llm", "StatusCode.UNAVAILABLE", "x"), TritonUnavailable)
    dead = classify("asr", "StatusCode.INTERNAL", "Stub process 'asr_whisper_0_0' is not healthy.")
    assert isinstance(dead, ModelUnhealthy) and dead.broken == "asr_whisper"
    assert [stage_of(m) for m in ("asr", "llm", "tts_piper", "tts", "embed", "vad")] == [
        "asr", "llm", "tts", "tts", "embed", "vad"
    ]  # fmt: skip


def test_the_reaper_stops_a_triton_left_behind(tmp_path):
    from orchestrator.reaper import TRITON_PIDFILE, stop_triton

    fake = tmp_path / "tritonserver"  # a process whose command line says tritonserver
    shutil.copy(shutil.which("sleep"), fake)
    proc = subprocess.Popen([str(fake), "60"], start_new_session=True)
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 5
    while b"tritonserver" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the exec is visible
    pidfile = tmp_path / TRITON_PIDFILE
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text(f"{proc.pid}\n")
    assert stop_triton(tmp_path, grace_s=2)
    assert proc.wait(timeout=5) == -signal.SIGTERM
    assert not pidfile.exists()
    # a pid file whose process is something else is never acted on
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    pidfile.write_text(f"{other.pid}\n")
    try:
        assert not stop_triton(tmp_path)
        time.sleep(0.1)
        assert other.poll() is None
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()


def test_in_band_errors_carry_retry_after_whenever_http_would():
    from orchestrator.admission import Overloaded
    from orchestrator.api.errors import error_event
    from orchestrator.turn import ConversationNotFound

    assert error_event(Overloaded("busy", 3)) == {"status": 503, "detail": "busy", "retry_after": 3}
    unavailable = error_event(TritonUnavailable("asr is down"))  # a model that is not there
    assert unavailable["status"] == 503 and unavailable["retry_after"] >= 1
    assert "retry_after" not in error_event(ConversationNotFound("no such conversation"))
