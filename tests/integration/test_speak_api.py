"""Speech synthesis on the real stack: the default Piper voice served by Triton as
``tts_piper``, ``POST /v1/speak`` in every format, intelligibility by round trip through
the ASR pipeline, and bad text of every kind."""

import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor

import jiwer
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from benchmarks.speech import TTS_SENTENCES
from orchestrator.audio import decode_audio
from tests.conftest import load_backend_module, wav_bytes

log = logging.getLogger(__name__)
tts_text = load_backend_module("tts_piper_frontend", "tts_text")


def words(text: str) -> str:
    """What WER compares: both sides normalised as the voice reads them, no punctuation."""
    spoken = tts_text.normalise(text).lower().replace("-", " ")
    return " ".join("".join(c if c.isalnum() or c == "'" else " " for c in spoken).split())


def heard(client, wav: bytes) -> str:
    """The words ``/v1/transcribe`` hears in ``wav``, normalised as :func:`words` does."""
    r = client.post("/v1/transcribe", files={"file": ("reply.wav", wav)}, data={"language": "en"})
    assert r.status_code == 200, r.text
    return words(r.json()["text"])


def synthesize(client: grpcclient.InferenceServerClient, text: str, **extra) -> np.ndarray:
    inputs = [grpcclient.InferInput("TEXT", [1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
    for name, (dtype, value) in extra.items():
        tensor = grpcclient.InferInput(name, [1], dtype)
        tensor.set_data_from_numpy(
            np.array([value], dtype=np.float32 if dtype == "FP32" else np.int32)
        )
        inputs.append(tensor)
    result = client.infer("tts_piper", inputs)
    assert result.as_numpy("SAMPLE_RATE").tolist() == [22050]
    return result.as_numpy("AUDIO")


@pytest.fixture(scope="module")
def grpc(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield client
    client.close()


def test_intelligible_by_round_trip_through_asr(client):
    """20 varied sentences -> /v1/speak -> /v1/transcribe; WER at most 10%."""
    references, hypotheses = [], []
    for sentence in TTS_SENTENCES:
        spoken = client.post("/v1/speak", json={"text": sentence, "format": "wav"})
        assert spoken.status_code == 200, spoken.text
        references.append(words(sentence))
        hypotheses.append(heard(client, spoken.content))
    error = jiwer.wer(references, hypotheses)
    log.info("TTS round-trip WER over %d sentences: %.3f", len(TTS_SENTENCES), error)
    for ref, hyp in zip(references, hypotheses, strict=True):
        if ref != hyp:
            log.info("said %r, heard %r", ref, hyp)
    assert error <= 0.10


@pytest.mark.parametrize(
    ("body", "accept", "media_type", "magic"),
    [
        ({}, None, "audio/ogg", b"OggS"),
        ({}, "audio/mpeg", "audio/mpeg", b"ID3"),
        ({"format": "wav"}, "audio/mpeg", "audio/wav", b"RIFF"),
        ({"stream": True}, "audio/ogg", "audio/ogg", b"OggS"),
        ({"stream": True, "format": "wav"}, None, "audio/wav", b"RIFF"),
    ],
)
def test_speak_formats(client, body, accept, media_type, magic):
    headers = {"accept": accept} if accept else {}
    text = "Hello from June. This is the second sentence."
    r = client.post("/v1/speak", json={"text": text, **body}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media_type
    assert r.content.startswith(magic)
    seconds = len(decode_audio(r.content, max_seconds=60)) / 16000
    assert 1.5 < seconds < 6.0


def test_pace_changes_duration(client):
    text = "The quick brown fox jumps over the lazy dog."
    normal = client.post("/v1/speak", json={"text": text, "format": "wav"})
    fast = client.post("/v1/speak", json={"text": text, "format": "wav", "pace": 2.0})
    assert normal.status_code == fast.status_code == 200
    ratio = float(fast.headers["x-audio-seconds"]) / float(normal.headers["x-audio-seconds"])
    assert 0.35 < ratio < 0.7


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("", 422, "text is empty"),
        ("   \n\t ", 422, "text is empty"),
        ("😀🎉👍🔥", 422, "nothing speakable"),
        ("x" * 100_000, 413, "limit is 5000"),
    ],
)
def test_bad_text_gets_a_clear_4xx(client, text, code, message):
    r = client.post("/v1/speak", json={"text": text})
    assert r.status_code == code
    assert message in r.text


@pytest.mark.parametrize(
    "text",
    [
        "Hello\x00 wor\x07ld\x1b[31m, again\u200b.",  # control and format characters
        "שלום עולם, مرحبا بالعالم",  # right-to-left scripts
        "Price: $5 😀 and 10% off!",  # emoji among words
    ],
)
def test_odd_text_gets_sensible_audio(client, text):
    r = client.post("/v1/speak", json={"text": text, "format": "wav"})
    assert r.status_code == 200, r.text
    assert float(r.headers["x-audio-seconds"]) > 0.3


def test_model_survives_bad_requests(grpc):
    """Direct to Triton: over-long text, bad PACE and odd bytes fail one request each."""
    with pytest.raises(Exception, match="limit is 5000"):
        synthesize(grpc, "y" * 6000)
    with pytest.raises(Exception, match="PACE"):
        synthesize(grpc, "Hi.", PACE=("FP32", 9.0))
    assert synthesize(grpc, "🎉").size == 0  # nothing speakable: empty audio, not an error
    bad = grpcclient.InferInput("TEXT", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"caf\xc3\xa9 \xff\xfe ok"], dtype=np.object_))
    assert grpc.infer("tts_piper", [bad]).as_numpy("AUDIO").size > 0
    assert synthesize(grpc, "Still here.").size > 10_000
    assert grpc.is_model_ready("tts_piper")


def test_concurrent_requests_all_answer(grpc):
    texts = [f"Request number {i} is being spoken." for i in range(6)]
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        audios = list(pool.map(lambda t: synthesize(grpc, t), texts))
    log.info("6 requests at concurrency 4: %.2f s", time.perf_counter() - start)
    assert all(a.size > 22050 for a in audios)
    assert all(np.isfinite(a).all() and np.abs(a).max() <= 1.0 for a in audios)


def test_streamed_speech_arrives_sentence_by_sentence(client):
    text = "First sentence here. Second sentence follows. The third one ends it."
    with client.stream("POST", "/v1/speak", json={"text": text, "stream": True}) as r:
        assert r.status_code == 200
        chunks = [chunk for chunk in r.iter_bytes() if chunk]
    assert len(chunks) >= 4  # the first sentence in two pieces, one per sentence after it
    assert chunks[0].startswith(b"OggS")
    # the first piece (0.28 s of the first sentence, less what the Opus encoder and the Ogg
    # page still hold) is playable on its own, long before the whole reply
    first = decode_audio(chunks[0], max_seconds=60)
    whole = decode_audio(b"".join(chunks), max_seconds=60)
    assert 0 < len(first) / 16000 < 0.3 and len(whole) / 16000 > 3.0


def stream_pieces(triton_url: str, text: str, *, hang_up_after: int | None = None) -> list:
    """``text`` through the decoupled ``tts_piper_stream``: each response's AUDIO (or the
    error), until the final response, or until ``hang_up_after`` pieces (then the stream
    is closed, cancelling the request)."""
    pieces: queue.Queue = queue.Queue(maxsize=64)
    client = grpcclient.InferenceServerClient(triton_url)
    client.start_stream(callback=lambda result, error: pieces.put((result, error)))
    try:
        tensor = grpcclient.InferInput("TEXT", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
        client.async_stream_infer("tts_piper_stream", [tensor], enable_empty_final_response=True)
        out: list = []
        while hang_up_after is None or len(out) < hang_up_after:
            result, error = pieces.get(timeout=60)
            if error is not None:
                return [error]
            response = result.get_response()
            if response.outputs:
                assert result.as_numpy("SAMPLE_RATE").tolist() == [22050]
                out.append(result.as_numpy("AUDIO"))
            if response.parameters["triton_final_response"].bool_param:
                break
        return out
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()


def test_streamed_voice_sends_its_first_piece_before_the_rest(triton, client):
    """The first 24 frames (0.28 s) of the first sentence come as a piece of their own, then
    the rest of each sentence; joined, the pieces are as intelligible as the whole voice
    (the same 20 sentences and goal as the whole voice's test above)."""
    sentences = TTS_SENTENCES
    references, hypotheses = [], []
    for sentence in sentences:
        pieces = stream_pieces(triton.grpc_url, sentence)
        assert len(pieces) >= 2 and pieces[0].size == 24 * 256
        audio = np.concatenate(pieces)
        assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
        references.append(words(sentence))
        hypotheses.append(heard(client, wav_bytes(audio, 22050)))
    error = jiwer.wer(references, hypotheses)
    log.info("streamed voice round-trip WER over %d sentences: %.3f", len(sentences), error)
    assert error <= 0.10


def test_streamed_voice_refuses_bad_text_and_survives_hang_ups(triton, grpc):
    errors = stream_pieces(triton.grpc_url, "y" * 6000)
    assert len(errors) == 1 and "limit is 5000" in str(errors[0])
    assert stream_pieces(triton.grpc_url, "🎉") == []  # nothing speakable: no pieces
    long = " ".join(TTS_SENTENCES[:8])
    for _ in range(3):  # clients that leave after the first piece cancel their synthesis
        assert len(stream_pieces(triton.grpc_url, long, hang_up_after=1)) == 1
    assert len(stream_pieces(triton.grpc_url, "Still here, after all that.")) >= 2
    assert grpc.is_model_ready("tts_piper_stream")
