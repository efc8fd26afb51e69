"""ASR quality on real Whisper base weights, served by Triton.

- With Whisper's fixed 30 s window, June's graphs and decoding (the module the server
  runs) equal transformers' greedy ``generate`` on the same weights for at least 95% of 22
  clips synthesised by the tests (Piper voice and espeak-ng).
- Served with the defaults (the adaptive window, 10 s for these clips, with its padding
  weighted as in 30 s, and the int8 decoder), the WER on 180 spoken questions (1,539
  words) is within 0.5 points of the fp32 full window, the goal of issue 13, and within
  1 point of faster-whisper (int8, greedy) on the same weights. The questions, not the 22
  sentences: on 22 clips one clip that changes moves the WER by 1.5 points, in either
  direction (README, "Speech recognition").
- On 11 real human recordings (pocketsphinx's test data on PyPI: LibriVox sentences,
  spoken playing cards, a robot command; 96 words), the served default loses at most one
  word against the full window and against faster-whisper.
"""

import logging
from collections.abc import Callable

import jiwer
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from benchmarks.speech import clips, human_clips, normalise, questions
from exporters.whisper import PACKAGED, resolve_source

log = logging.getLogger(__name__)


def served(client: grpcclient.InferenceServerClient, audio: np.ndarray) -> str:
    tensor = grpcclient.InferInput("AUDIO", [1, len(audio)], "FP32")
    tensor.set_data_from_numpy(audio[None].astype(np.float32))
    lang = grpcclient.InferInput("LANGUAGE", [1, 1], "BYTES")
    lang.set_data_from_numpy(np.array([[b"en"]], dtype=np.object_))
    result = client.infer("asr", [tensor, lang])
    return result.as_numpy("TRANSCRIPT").reshape(-1)[0].decode()


def served_all(triton, audios: list[np.ndarray]) -> list[str]:
    """The served ``asr`` ensemble's transcripts (the defaults), one request each."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        return [served(client, audio) for audio in audios]
    finally:
        client.close()


@pytest.fixture(scope="module")
def served_questions(triton) -> list[str]:
    return served_all(triton, [audio for _, audio in questions()])


@pytest.fixture(scope="module")
def ct2_folder(cache_dir):
    assert "whisper-base" in PACKAGED
    return resolve_source("whisper-base", cache_dir)[0]


@pytest.fixture(scope="module")
def full_window(whisper_export) -> Callable[[np.ndarray], str]:
    """June's fp32 graphs and decoding in process, with Whisper's fixed 30 s window."""
    from tests.conftest import load_backend_module

    log_mel = load_backend_module("asr_features", "log_mel")
    decode = load_backend_module("asr_whisper", "whisper_decode")
    features = log_mel.LogMel(np.load(whisper_export / "mel_filters.npy"), window_floor_s=30)
    whisper = decode.WhisperGreedy(whisper_export, intra_op_threads=2)
    return lambda audio: whisper.transcribe([(features(audio), "en")])[0].text


@pytest.fixture(scope="module")
def full_window_texts(full_window) -> list[str]:
    return [full_window(audio) for _, audio in clips()]


@pytest.fixture(scope="module")
def full_window_questions(full_window) -> list[str]:
    return [full_window(audio) for _, audio in questions()]


def test_full_window_equals_transformers_greedy(full_window_texts, ct2_folder, tmp_path_factory):
    import torch
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from exporters.ct2_whisper import convert_ct2_whisper

    hf_dir = convert_ct2_whisper(ct2_folder, tmp_path_factory.mktemp("hf") / "base")
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    reference = []
    with torch.no_grad():
        for _, audio in clips():
            features = extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
            tokens = model.generate(
                features, language="en", task="transcribe", do_sample=False, num_beams=1
            )
            reference.append(tokenizer.decode(tokens[0].tolist(), skip_special_tokens=True).strip())
    same = [a == b for a, b in zip(full_window_texts, reference, strict=True)]
    for ok, ours, theirs in zip(same, full_window_texts, reference, strict=True):
        if not ok:
            log.warning("differs: ours %r vs transformers %r", ours, theirs)
    assert len(same) >= 20
    assert sum(same) / len(same) >= 0.95, list(zip(full_window_texts, reference, strict=True))


def test_adaptive_window_keeps_the_wer(served_questions, full_window_questions):
    truth = [normalise(t) for t, _ in questions()]
    served = jiwer.wer(truth, [normalise(t) for t in served_questions])
    full = jiwer.wer(truth, [normalise(t) for t in full_window_questions])
    log.info("questions WER adaptive (served) %.4f, full window %.4f", served, full)
    assert served <= full + 0.005, (served, full)
    # most transcripts are the same words either way
    pairs = list(zip(served_questions, full_window_questions, strict=True))
    same = sum(normalise(a) == normalise(b) for a, b in pairs)
    log.info("questions: %d of %d transcripts as the full window's", same, len(pairs))
    assert same >= 0.8 * len(pairs), [p for p in pairs if normalise(p[0]) != normalise(p[1])]


def test_wer_within_one_point_of_faster_whisper(served_questions, ct2_folder):
    theirs = _faster_whisper_texts(ct2_folder, [audio for _, audio in questions()])
    truth = [normalise(t) for t, _ in questions()]
    ours_wer = jiwer.wer(truth, [normalise(t) for t in served_questions])
    fw_wer = jiwer.wer(truth, [normalise(t) for t in theirs])
    log.info("questions WER served %.4f, faster-whisper %.4f", ours_wer, fw_wer)
    assert ours_wer <= fw_wer + 0.01, (ours_wer, fw_wer)
    assert ours_wer < 0.15  # and it is a good transcript in absolute terms


def _faster_whisper_texts(ct2_folder, audios: list[np.ndarray]) -> list[str]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2_folder), device="cpu", compute_type="int8", cpu_threads=2)
    texts = []
    for audio in audios:
        segments, _ = model.transcribe(
            audio, language="en", beam_size=1, without_timestamps=True,
            condition_on_previous_text=False, vad_filter=False,
        )  # fmt: skip
        texts.append(" ".join(s.text.strip() for s in segments))
    return texts


def test_real_human_recordings(triton, full_window, ct2_folder, cache_dir):
    """Real speech, not synthesised: the served default against the full window and
    faster-whisper, counted in words."""
    recordings = human_clips(cache_dir)
    assert len(recordings) == 11
    truth = [normalise(t) for t, _ in recordings]
    ours = served_all(triton, [a for _, a in recordings])
    full = [full_window(a) for _, a in recordings]
    theirs = _faster_whisper_texts(ct2_folder, [a for _, a in recordings])

    def errors(texts: list[str]) -> int:
        m = jiwer.process_words(truth, [normalise(t) for t in texts])
        return m.substitutions + m.deletions + m.insertions

    words = sum(len(t.split()) for t in truth)
    log.info(
        "human recordings, errors in %d words: served %d, full window %d, faster-whisper %d",
        words, errors(ours), errors(full), errors(theirs),
    )  # fmt: skip
    assert errors(ours) <= errors(full) + 1, list(zip(ours, full, strict=True))
    assert errors(ours) <= errors(theirs) + 1, list(zip(ours, theirs, strict=True))
    assert errors(ours) / words < 0.10
