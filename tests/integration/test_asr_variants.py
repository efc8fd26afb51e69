"""The other ASR choices: tiny.en (English-only prompt path) and int8 graphs.

Decoded with the same module the server runs (whisper_decode.py), on real weights, against
transformers' greedy output on the same weights.
"""

import jiwer
import numpy as np
import pytest
import torch

from benchmarks.speech import clips, normalise
from exporters.ct2_whisper import convert_ct2_whisper
from exporters.whisper import export_whisper, resolve_source
from tests.conftest import load_backend_module


def transcribe(folder, audios: list[np.ndarray]) -> list[str]:
    log_mel = load_backend_module("asr_features", "log_mel")
    decode = load_backend_module("asr_whisper", "whisper_decode")
    features = log_mel.LogMel(np.load(folder / "mel_filters.npy"))
    whisper = decode.WhisperGreedy(folder, intra_op_threads=2)
    return [r.text for r in whisper.transcribe([(features(a), "en") for a in audios])]


@pytest.fixture(scope="module")
def sample():
    return clips()[:6] + clips()[12:16]


def test_tiny_en_matches_transformers(cache_dir, sample, tmp_path):
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    export = export_whisper("whisper-tiny.en", cache_dir=cache_dir)
    ours = transcribe(export, [a for _, a in sample])
    hf_dir = convert_ct2_whisper(resolve_source("whisper-tiny.en", cache_dir)[0], tmp_path / "hf")
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    assert model.generation_config.is_multilingual is False
    extractor = WhisperFeatureExtractor(feature_size=80)
    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    theirs = []
    with torch.no_grad():
        for _, audio in sample:
            feats = extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
            tokens = model.generate(feats, num_beams=1, do_sample=False)
            theirs.append(tokenizer.decode(tokens[0].tolist(), skip_special_tokens=True).strip())
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert same >= len(sample) - 1, list(zip(ours, theirs, strict=True))


def test_int8_graphs_still_transcribe(cache_dir, sample):
    export = export_whisper("whisper-base", cache_dir=cache_dir, precision="int8")
    ours = transcribe(export, [a for _, a in sample])
    wer = jiwer.wer([normalise(t) for t, _ in sample], [normalise(t) for t in ours])
    assert wer < 0.2, list(zip(ours, [t for t, _ in sample], strict=True))
