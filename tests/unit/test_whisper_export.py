"""Whisper export pieces: CTranslate2 reading, sources, metadata, features, decoding rules."""

import shutil

import numpy as np
import pytest
import torch

from exporters.common import ExportError
from exporters.ct2_whisper import convert_ct2_whisper, iter_ct2_variables, read_ct2_weights
from exporters.whisper import resolve_source, source_kind
from tests.conftest import load_backend_module


@pytest.fixture(scope="module")
def base_ct2(cache_dir):
    return resolve_source("whisper-base", cache_dir)[0]


@pytest.fixture(scope="module")
def tiny_random_hf(tmp_path_factory, base_ct2):
    """A random-initialised Whisper of the real architecture, with the real tokenizer."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=51865, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80,
        decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257, bos_token_id=50257,
    )  # fmt: skip
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("tiny") / "hf"
    model.save_pretrained(folder)
    shutil.copy(base_ct2 / "tokenizer.json", folder / "tokenizer.json")
    return folder, model


def test_ct2_round_trip_is_lossless(tiny_random_hf, tmp_path, base_ct2):
    """HF -> CTranslate2 (its own converter) -> our reader -> HF gives the same weights."""
    import ctranslate2
    from transformers import WhisperForConditionalGeneration

    folder, original = tiny_random_hf
    ct2_dir = tmp_path / "ct2"
    ctranslate2.converters.TransformersConverter(
        str(folder), copy_files=["tokenizer.json"]
    ).convert(str(ct2_dir), quantization="float32")
    shutil.copy(base_ct2 / "config.json", ct2_dir / "config.json")  # lang ids, suppress lists
    back = WhisperForConditionalGeneration.from_pretrained(
        convert_ct2_whisper(ct2_dir, tmp_path / "hf")
    )
    ours, theirs = back.state_dict(), original.state_dict()
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value, rtol=0, atol=0, msg=name)


def test_reader_handles_the_real_packaged_checkpoint(base_ct2):
    names = [name for name, _ in iter_ct2_variables(base_ct2 / "model.bin")]
    assert "encoder/conv1/weight" in names
    assert "decoder/projection/weight" in names  # an alias of the embeddings
    weights = read_ct2_weights(base_ct2 / "model.bin")
    assert weights["decoder/projection/weight"] is weights[
        "decoder/embeddings/weight"
    ] or np.array_equal(weights["decoder/projection/weight"], weights["decoder/embeddings/weight"])
    assert weights["encoder/conv1/weight"].dtype == np.float32


def test_truncated_or_foreign_model_bin_fails_clearly(tmp_path, base_ct2):
    truncated = tmp_path / "model.bin"
    truncated.write_bytes((base_ct2 / "model.bin").read_bytes()[:5000])
    with pytest.raises(ExportError, match="truncated"):
        read_ct2_weights(truncated)
    truncated.write_bytes(b"\x63\x00\x00\x00garbage")
    with pytest.raises(ExportError, match="binary version 99"):
        read_ct2_weights(truncated)


def test_source_kinds(tmp_path, tiny_random_hf, base_ct2):
    assert source_kind(tiny_random_hf[0]) == "huggingface"
    assert source_kind(base_ct2) == "ctranslate2"
    pt = tmp_path / "small.pt"
    pt.write_bytes(b"not a checkpoint")
    assert source_kind(pt) == "openai"
    with pytest.raises(ExportError, match="is not a Whisper checkpoint"):
        source_kind(tmp_path)
    with pytest.raises(ExportError, match="does not exist"):
        resolve_source(tmp_path / "missing", tmp_path)


def test_export_metadata_comes_from_the_checkpoint(whisper_export):
    import json

    meta = json.loads((whisper_export / "whisper.json").read_text())
    assert meta["n_mels"] == 80
    assert meta["multilingual"] is True
    assert len(meta["languages"]) == 99 and meta["languages"]["en"] == 50259
    assert meta["sot"] == 50258 and meta["eot"] == 50257
    assert meta["no_timestamps"] == 50363 and meta["timestamps"] is True
    assert meta["begin_suppress_tokens"] == [220, 50257]
    assert np.load(whisper_export / "mel_filters.npy").shape == (201, 80)


def test_log_mel_matches_transformers(whisper_export):
    from transformers import WhisperFeatureExtractor

    log_mel = load_backend_module("asr_features", "log_mel")
    features = log_mel.LogMel(np.load(whisper_export / "mel_filters.npy"))
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal(16000 * 7)).astype(np.float32)
    ours = features(audio)
    reference = WhisperFeatureExtractor(feature_size=80)(
        audio, sampling_rate=16000, return_tensors="np"
    ).input_features
    assert ours.shape == (1, 80, 3000)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_long_audio_is_split_at_quiet_points():
    log_mel = load_backend_module("asr_features", "log_mel")
    features = log_mel.LogMel(np.ones((201, 80), np.float32))
    tone = np.sin(np.arange(16000 * 27) / 5).astype(np.float32)
    quiet = np.zeros(16000, np.float32)
    audio = np.concatenate([tone, quiet, tone, quiet, tone])  # 83 s
    windows = features.split(audio)
    assert len(windows) == 4 or len(windows) == 3
    assert sum(len(w) for w in windows) == len(audio)  # nothing dropped
    assert all(len(w) <= 16000 * 30 for w in windows)
    assert 16000 * 27 <= len(windows[0]) <= 16000 * 28  # cut inside the quiet second


def test_adaptive_window_sizes():
    log_mel = load_backend_module("asr_features", "log_mel")
    features = log_mel.LogMel(np.ones((201, 80), np.float32), window_floor_s=10, window_margin_s=2)
    seconds = {s: features.window_seconds(int(s * 16000)) for s in (0.5, 3, 8, 8.5, 14, 25, 30)}
    # max(floor, length + margin), in 5 s steps, never past 30 s
    assert seconds == {0.5: 10, 3: 10, 8: 10, 8.5: 15, 14: 20, 25: 30, 30: 30}
    assert features(np.zeros(16000 * 3, np.float32)).shape == (1, 80, 1000)
    # long audio keeps 30 s windows, whatever the floor
    assert features(np.zeros(16000 * 45, np.float32)).shape == (2, 80, 3000)
    # floor 30 is Whisper's fixed window
    full = log_mel.LogMel(np.ones((201, 80), np.float32), window_floor_s=30, window_margin_s=2)
    assert not full.adaptive and full(np.zeros(16000 * 3, np.float32)).shape == (1, 80, 3000)
    with pytest.raises(ValueError):
        log_mel.LogMel(np.ones((201, 80), np.float32), window_floor_s=0)


def test_short_window_features_are_the_full_windows_first_frames(whisper_export):
    """The adaptive window computes the same mel frames; only the padding is shorter."""
    log_mel = load_backend_module("asr_features", "log_mel")
    filters = np.load(whisper_export / "mel_filters.npy")
    audio = (0.1 * np.random.default_rng(2).standard_normal(16000 * 4)).astype(np.float32)
    full = log_mel.LogMel(filters)(audio)[0]
    short = log_mel.LogMel(filters, window_floor_s=10, window_margin_s=2)(audio)[0]
    assert short.shape == (80, 1000)
    # speech frames agree (the log floor is max - 8 in both, the max is in the speech)
    np.testing.assert_allclose(short[:, :390], full[:, :390], atol=1e-4)


def test_encoder_graph_takes_any_window(whisper_export):
    """The exported encoder runs at 10, 20 and 30 s; its first positions depend only on the
    frames they see, and the full window matches Hugging Face's encoder (export parity)."""
    import json

    import onnxruntime as ort

    info = json.loads((whisper_export / "export.json").read_text())
    assert info["extra"]["parity_same_argmax"] == 1.0
    assert info["extra"]["parity_short_window_max_diff"] < 1e-2
    encoder = ort.InferenceSession(
        str(whisper_export / "encoder.onnx"), providers=["CPUExecutionProvider"]
    )
    mel = np.random.default_rng(3).standard_normal((2, 80, 3000)).astype(np.float32) * 0.5
    for frames in (1000, 2000, 3000):
        bias = np.zeros((2, frames // 2), np.float32)
        key, value = encoder.run(None, {"mel": mel[:, :, :frames], "key_bias": bias})
        assert key.shape == (6, 2, 8, frames // 2, 64) and value.shape == key.shape
        assert np.isfinite(key).all()


def test_padding_key_bias_weighs_a_short_windows_padding_as_30_s_would():
    decode = load_backend_module("asr_whisper", "whisper_decode")
    windows = np.full((2, 80, 1000), -0.5, np.float32)  # the floor everywhere: padding
    windows[0, :, :300] = np.random.default_rng(5).uniform(0, 1, (80, 300))  # 3 s heard
    windows[1, 7, 998] = 0.0  # one bin above the floor in the last frame: no padding
    bias = decode.padding_key_bias(windows, 1500, guard=20)
    assert bias.shape == (2, 500)
    # mel frame 299 reaches encoder position 150; the 20 positions after it keep their
    # weight, and the 329 beyond stand for the 1329 of a 30 s window
    assert (bias[0, :171] == 0).all()
    np.testing.assert_allclose(bias[0, 171:], np.log(1329 / 329), rtol=1e-6)
    assert (bias[1] == 0).all()
    # speech that leaves less than the guard before the window's end: no bias
    windows[0, :, :970] = 1.0
    assert (decode.padding_key_bias(windows, 1500, guard=20)[0] == 0).all()
    # a 30 s window is Whisper's own: nothing to make up for
    full = np.full((1, 80, 3000), -0.5, np.float32)
    full[0, :, :300] = 1.0
    assert (decode.padding_key_bias(full, 1500) == 0).all()


def test_the_bias_encodes_a_short_window_nearer_to_30_s(whisper_export):
    """Real speech, real weights: with the bias, a 10 s window's speech positions come out
    of the encoder nearer to the 30 s window's than without it."""
    import onnxruntime as ort

    from benchmarks.speech import clips

    decode = load_backend_module("asr_whisper", "whisper_decode")
    log_mel = load_backend_module("asr_features", "log_mel")
    filters = np.load(whisper_export / "mel_filters.npy")
    encoder = ort.InferenceSession(
        str(whisper_export / "encoder.onnx"), providers=["CPUExecutionProvider"]
    )
    _, audio = clips()[0]  # a 3 s sentence
    full = log_mel.LogMel(filters)(audio)
    short = log_mel.LogMel(filters, window_floor_s=10, window_margin_s=2)(audio)
    speech = int(np.ceil(len(audio) / 320))  # encoder positions of the clip itself

    def keys(window: np.ndarray, bias: np.ndarray) -> np.ndarray:
        return encoder.run(None, {"mel": window, "key_bias": bias})[0][:, 0, :, :speech]

    reference = keys(full, np.zeros((1, 1500), np.float32))
    bias = decode.padding_key_bias(short, 1500)
    assert bias.max() > 1.0  # 10 s keeps about a quarter of a 30 s window's padding
    biased = np.abs(keys(short, bias) - reference).mean()
    plain = np.abs(keys(short, np.zeros_like(bias)) - reference).mean()
    assert biased < 0.7 * plain, (biased, plain)


def test_windows_of_different_lengths_decode_in_their_own_batches(whisper_export):
    decode = load_backend_module("asr_whisper", "whisper_decode")
    whisper = decode.WhisperGreedy(whisper_export, intra_op_threads=1)
    seen: list[tuple[int, int]] = []
    real = whisper.decode_live

    def spy(windows, languages):
        seen.append((len(windows), windows.shape[-1]))
        return real(windows, languages)

    whisper.decode_live = spy
    rng = np.random.default_rng(4)
    requests = [
        (rng.standard_normal((1, 80, 1000)).astype(np.float32), "en"),
        (rng.standard_normal((2, 80, 3000)).astype(np.float32), "en"),
        (rng.standard_normal((1, 80, 1000)).astype(np.float32), "en"),
        (np.zeros((1, 80, 1500), np.float32), "en"),  # flat: answered without decoding
    ]
    results = whisper.transcribe(requests)
    assert len(results) == 4 and results[3].text == ""
    assert sorted(seen) == [(2, 1000), (2, 3000)]


def test_decoder_takes_a_cache_per_layer_and_refuses_an_older_graph(whisper_export, tmp_path):
    """Each layer's caches are inputs of their own (a stacked input is copied out layer by
    layer inside the graph, every token); a decoder exported before that is refused by
    name, with what to do."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    session = ort.InferenceSession(
        str(whisper_export / "decoder.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    assert names[0] == "input_ids" and len(names) == 1 + 4 * 6
    assert {"past_key.5", "past_value.0", "cross_key.3", "cross_value.5"} <= set(names)
    outputs = [o.name for o in session.get_outputs()]
    assert outputs[0] == "logits" and "present_key.0" in outputs and len(outputs) == 13

    old = tmp_path / "old"
    shutil.copytree(whisper_export, old, ignore=shutil.ignore_patterns("decoder.onnx"))
    stacked = ["input_ids", "past_key", "past_value", "cross_key", "cross_value"]
    graph = helper.make_graph(
        [helper.make_node("Identity", [n], [f"{n}_out"]) for n in stacked],
        "stacked",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in stacked],
        [helper.make_tensor_value_info(f"{n}_out", TensorProto.FLOAT, None) for n in stacked],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), old / "decoder.onnx"
    )
    decode = load_backend_module("asr_whisper", "whisper_decode")
    with pytest.raises(ValueError, match=r"does not take a cache per layer.*june export whisper"):
        decode.WhisperGreedy(old, intra_op_threads=1)


def test_decoder_refuses_unknown_languages(whisper_export):
    decode = load_backend_module("asr_whisper", "whisper_decode")
    whisper = decode.WhisperGreedy(whisper_export, intra_op_threads=1)
    whisper.check_language("de")
    whisper.check_language(None)
    with pytest.raises(ValueError, match="unsupported language 'xx'"):
        whisper.check_language("xx")
    silent = np.zeros((1, 80, 3000), np.float32) - 1.5
    [result] = whisper.transcribe([(silent, None)])
    assert result.text == "" and result.no_speech_prob == 1.0


def _openai_name(name: str) -> str:
    """The inverse of exporters.openai_whisper.hf_name, written independently for the test."""
    import re

    fixed = {
        "model.encoder.embed_positions.weight": "encoder.positional_embedding",
        "model.decoder.embed_positions.weight": "decoder.positional_embedding",
        "model.decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    }
    if name in fixed:
        return fixed[name]
    name = name.removeprefix("model.")
    name = name.replace("encoder.layer_norm.", "encoder.ln_post.").replace(
        "decoder.layer_norm.", "decoder.ln."
    )
    name = re.sub(r"\.layers\.(\d+)\.", r".blocks.\1.", name)
    for hf, openai in [
        ("encoder_attn_layer_norm", "cross_attn_ln"), ("encoder_attn", "cross_attn"),
        ("self_attn_layer_norm", "attn_ln"), ("self_attn", "attn"), ("final_layer_norm", "mlp_ln"),
        ("fc1", "mlp.0"), ("fc2", "mlp.2"), ("q_proj", "query"), ("k_proj", "key"),
        ("v_proj", "value"), ("out_proj", "out"),
    ]:  # fmt: skip
        name = name.replace(f".{hf}.", f".{openai}.")
    return name


def test_openai_checkpoint_round_trip(tiny_random_hf, tmp_path, cache_dir):
    from transformers import WhisperForConditionalGeneration

    from exporters.whisper import _convert_openai

    _, original = tiny_random_hf
    cfg = original.config
    checkpoint = tmp_path / "tiny.pt"
    torch.save(
        {
            "dims": {
                "n_mels": cfg.num_mel_bins,
                "n_vocab": cfg.vocab_size,
                "n_audio_ctx": cfg.max_source_positions,
                "n_audio_state": cfg.d_model,
                "n_audio_head": cfg.encoder_attention_heads,
                "n_audio_layer": cfg.encoder_layers,
                "n_text_ctx": cfg.max_target_positions,
                "n_text_state": cfg.d_model,
                "n_text_head": cfg.decoder_attention_heads,
                "n_text_layer": cfg.decoder_layers,
            },
            "model_state_dict": {
                _openai_name(k): v
                for k, v in original.state_dict().items()
                if k != "proj_out.weight"
            },
        },
        checkpoint,
    )
    back = WhisperForConditionalGeneration.from_pretrained(
        _convert_openai(checkpoint, tmp_path / "hf", cache_dir)
    )
    ours, theirs = back.state_dict(), original.state_dict()
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value, rtol=0, atol=0, msg=name)
    assert back.generation_config.is_multilingual is True  # vocabulary 51865


def test_openai_checkpoint_errors(tmp_path, cache_dir):
    from exporters.whisper import _convert_openai

    bad = tmp_path / "bad.pt"
    torch.save({"weights": {}}, bad)
    with pytest.raises(ExportError, match="not an openai-whisper checkpoint"):
        _convert_openai(bad, tmp_path / "hf", cache_dir)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a zip")
    with pytest.raises(ExportError, match="not a readable openai-whisper checkpoint"):
        _convert_openai(junk, tmp_path / "hf", cache_dir)
