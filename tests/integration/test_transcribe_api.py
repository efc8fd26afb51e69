"""``POST /v1/transcribe`` on the real stack: every common format, and bad audio of every kind."""

import io
import time
from concurrent.futures import ThreadPoolExecutor

import jiwer
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from benchmarks.speech import clips, encode_upload, normalise, piper_wav, to_16k, wav_bytes

SENTENCE = "The meeting with the design team starts at ten tomorrow morning."


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return to_16k(piper_wav(SENTENCE))


def post(client, data: bytes, name: str = "voice.ogg", **form):
    return client.post("/v1/transcribe", files={"file": (name, io.BytesIO(data))}, data=form)


def wer(text: str, truth: str = SENTENCE) -> float:
    return jiwer.wer(normalise(truth), normalise(text))


@pytest.mark.parametrize(
    ("fmt", "codec", "name"),
    [
        ("ogg", "libopus", "voice.oga"),  # what Telegram voice notes are
        ("wav", "pcm_s16le", "a.wav"),
        ("mp3", "libmp3lame", "a.mp3"),
        ("flac", "flac", "a.flac"),
        ("ipod", "aac", "a.m4a"),
        ("webm", "libopus", "a.webm"),
    ],
)
def test_every_common_format_transcribes(client, speech, fmt, codec, name):
    r = post(client, encode_upload(speech, fmt=fmt, codec=codec), name)
    assert r.status_code == 200, r.text
    body = r.json()
    assert wer(body["text"]) <= 0.1, body["text"]
    assert body["language"] == "en"
    assert abs(body["duration_s"] - len(speech) / 16000) < 0.1
    assert body["no_speech_prob"] < 0.5
    assert set(body["timings_ms"]) == {"decode", "transcribe"}


def test_forced_language(client, speech):
    r = post(client, wav_bytes(speech, 16000), "a.wav", language="en")
    assert r.status_code == 200 and wer(r.json()["text"]) <= 0.1


def test_long_audio_is_windowed_not_truncated(client):
    gap = np.zeros(16000 * 12, dtype=np.float32)
    parts, texts = [], []
    for text, audio in clips()[:3] + clips()[13:15]:
        parts += [audio, gap]
        texts.append(text)
    long = np.concatenate(parts)
    assert len(long) / 16000 > 60  # three windows
    r = post(client, wav_bytes(long, 16000), "long.wav", language="en")
    assert r.status_code == 200, r.text
    assert wer(r.json()["text"], " ".join(texts)) < 0.15, r.json()["text"]


def test_leading_and_trailing_silence_are_cut_before_whisper(client, speech):
    quiet = np.zeros(16000 * 4, dtype=np.float32)
    hiss = np.random.default_rng(3).normal(0, 0.002, 16000 * 3).astype(np.float32)
    padded = np.concatenate([quiet, speech, hiss])
    r = post(client, wav_bytes(padded, 16000), "padded.wav", language="en")
    assert r.status_code == 200, r.text
    body = r.json()
    assert wer(body["text"]) <= 0.1, body["text"]
    assert abs(body["duration_s"] - len(padded) / 16000) < 0.05
    # the VAD's segments are padded by 0.2 s; nothing of the 7 s of quiet is left
    assert len(speech) / 16000 - 0.3 <= body["speech_s"] <= len(speech) / 16000 + 0.6


def test_silence_and_noise_give_empty_transcripts(client):
    silence = np.zeros(16000 * 4, dtype=np.float32)
    noise = np.random.default_rng(7).normal(0, 0.05, 16000 * 4).astype(np.float32)
    for audio in (silence, noise):
        r = post(client, wav_bytes(audio, 16000), "quiet.wav")
        assert r.status_code == 200, r.text
        assert r.json()["text"] == ""
        assert r.json()["no_speech_prob"] > 0.5
        assert r.json()["speech_s"] == 0.0


@pytest.mark.parametrize(
    ("data", "name", "status", "message"),
    [
        (b"", "empty.ogg", 400, "empty"),
        (b"this is a text file, not audio\n" * 10, "notes.txt", 415, "not a recognised audio"),
        (bytes(range(256)) * 40, "random.bin", 415, "not a recognised audio"),
        (b"OggS" + b"\x00" * 2000, "broken.ogg", 415, "not a recognised audio"),
    ],
)
def test_bad_audio_gets_4xx(client, data, name, status, message):
    r = post(client, data, name)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert client.get("/health").status_code == 200


def test_video_without_audio_is_415(client):
    import av

    buf = io.BytesIO()
    container = av.open(buf, mode="w", format="matroska")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    for i in range(5):
        frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    r = post(client, buf.getvalue(), "clip.mkv")
    assert r.status_code == 415
    assert "no audio stream" in r.json()["detail"]


def test_too_long_and_too_big_get_413(client, settings):
    long = np.zeros(int(8000 * (settings.max_audio_seconds + 5)), dtype=np.float32)
    r = post(client, wav_bytes(long, 8000), "long.wav")  # small file, long duration
    assert r.status_code == 413
    assert "longer than the limit" in r.json()["detail"]
    big = wav_bytes(np.zeros(settings.max_audio_bytes // 2 + 1000, np.float32), 16000)
    r = post(client, big, "big.wav")
    assert r.status_code == 413
    assert "exceeds the limit" in r.json()["detail"]


def test_unsupported_language_is_422(client, speech):
    r = post(client, wav_bytes(speech, 16000), "a.wav", language="xx")
    assert r.status_code == 422
    assert "unsupported language 'xx'" in r.json()["detail"]


def test_missing_file_is_422(client):
    r = client.post("/v1/transcribe", data={"language": "en"})
    assert r.status_code == 422


def test_concurrent_requests_are_batched(triton, speech):
    """Four clients at once: each gets its own right transcript, in fewer executions."""
    audios = [audio for _, audio in clips()[:8]]

    def one(audio: np.ndarray) -> str:
        c = grpcclient.InferenceServerClient(triton.grpc_url)
        try:
            tensor = grpcclient.InferInput("AUDIO", [1, len(audio)], "FP32")
            tensor.set_data_from_numpy(audio[None])
            return c.infer("asr", [tensor]).as_numpy("TRANSCRIPT").reshape(-1)[0].decode()
        finally:
            c.close()

    stats_client = grpcclient.InferenceServerClient(triton.grpc_url)

    def counts() -> tuple[int, int]:
        s = stats_client.get_inference_statistics("asr_whisper", as_json=True)["model_stats"][0]
        return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))

    def settled(inferences: int) -> tuple[int, int]:
        """Triton updates statistics just after responding: wait until they catch up."""
        deadline = time.monotonic() + 10
        while (current := counts())[0] < inferences and time.monotonic() < deadline:
            time.sleep(0.05)
        return current

    start = counts()
    alone = [one(a) for a in audios]
    before = settled(start[0] + len(audios))
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(one, audios))
    after = settled(before[0] + len(audios))
    assert together == alone
    assert after[0] - before[0] == len(audios)
    assert after[1] - before[1] < len(audios)  # fewer executions than requests: batched
    stats_client.close()
