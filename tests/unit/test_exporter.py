"""Embedder export: sources, cache and numerical parity with sentence-transformers."""

import json

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from exporters.common import ExportError, ExportInfo, cache_key
from exporters.embedder import EXPORTER_VERSION, export_embedder, resolve_source


def test_bad_sources_fail_with_one_line(tmp_path):
    with pytest.raises(ExportError, match="not a Hugging Face model folder"):
        resolve_source(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ExportError, match=r"no tokenizer\.json"):
        resolve_source(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ExportError, match=r"no model\.safetensors"):
        resolve_source(tmp_path)


def test_cache_key_depends_on_source_version_and_options():
    base = cache_key("embedder", "1", "abc", {"opset": 18})
    assert base == cache_key("embedder", "1", "abc", {"opset": 18})
    assert base != cache_key("embedder", "2", "abc", {"opset": 18})
    assert base != cache_key("embedder", "1", "abd", {"opset": 18})
    assert base != cache_key("embedder", "1", "abc", {"opset": 17})


def test_export_metadata_is_read_from_checkpoint(embedder_export):
    info = ExportInfo.read(embedder_export)
    assert info.exporter_version == EXPORTER_VERSION
    assert info.extra["dim"] == 384
    assert info.extra["max_seq_length"] == 256  # sentence_bert_config.json
    assert info.extra["pooling"] == "mean"  # 1_Pooling/config.json
    tok = json.loads((embedder_export / "tokenizer.json").read_text())
    assert tok["truncation"]["max_length"] == 256


def test_cache_hit_returns_same_folder(embedder_export, cache_dir):
    before = (embedder_export / "model.onnx").stat().st_mtime_ns
    again = export_embedder(None, cache_dir=cache_dir)
    assert again == embedder_export
    assert (again / "model.onnx").stat().st_mtime_ns == before


def test_graph_is_portable_and_checked(embedder_export):
    import onnx

    info = ExportInfo.read(embedder_export)
    assert info.extra["parity_min_cosine"] > 0.9999
    graph = onnx.load(str(embedder_export / "model.onnx"), load_external_data=False)
    assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}  # no contrib ops


def test_onnx_matches_sentence_transformers(embedder_export):
    from sentence_transformers import SentenceTransformer

    texts = ["hello", "The contract ends in March 2027.", "naïve café ☕", "word " * 400]
    tok = Tokenizer.from_file(str(embedder_export / "tokenizer.json"))
    tok.enable_padding()
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    session = ort.InferenceSession(str(embedder_export / "model.onnx"))
    ours = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    ref = SentenceTransformer(str(resolve_source(None)), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    cosine = (ours * ref).sum(axis=1)
    assert cosine.min() > 0.9999
