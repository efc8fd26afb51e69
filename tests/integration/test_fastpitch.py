"""FastPitch + HiFi-GAN: NeMo checkpoints (real architecture, random weights) exported to
ONNX, checked against PyTorch, and served by Triton as the ``tts`` ensemble.

No English FastPitch/HiFi-GAN weights install offline, so the voice is noise; what is
tested is the pipeline a real checkpoint goes through, which is the same code.
"""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from fastapi.testclient import TestClient

from exporters.common import ExportError, ExportInfo
from exporters.tts import PARITY_TOLERANCE, check_parity, export_tts
from orchestrator.api.app import create_app
from orchestrator.audio import decode_audio
from tests.conftest import bearer, load_backend_module, settings_for

chars_frontend = load_backend_module("tts_frontend", "chars_frontend")
tts_text = load_backend_module("tts_frontend", "tts_text")

TEXTS = [
    "Your appointment is on Tuesday at 3:45 pm.",
    "It costs $42.50, including tax!",
    "Don't forget: the café opens at 9.",
    "Is it raining in Seattle?",
    "A much longer sentence, with commas; colons: and (brackets) to see that every "
    "punctuation mark the tokenizer knows is kept and the rest is dropped.",
]


def test_export_records_parity_and_checkpoint_facts(fastpitch_export):
    info = ExportInfo.read(fastpitch_export)
    assert info.extra["sample_rate"] == 22050
    assert info.extra["n_mels"] == 80
    assert info.extra["hop_length"] == 256
    assert max(info.extra["parity"].values()) <= PARITY_TOLERANCE
    assert {"fastpitch.onnx", "hifigan.onnx", "tts.json"} <= set(info.artifacts)


def test_onnx_matches_pytorch_and_frontend_matches_nemo(
    fastpitch_checkpoints, fastpitch_export, cache_dir
):
    """Run in the NeMo environment now, on texts the export never saw."""
    acoustic, vocoder = fastpitch_checkpoints
    spoken = [tts_text.normalise(t) for t in TEXTS]
    report = check_parity(acoustic, vocoder, fastpitch_export, spoken, cache_dir=cache_dir)
    assert report["acoustic_max_abs"] <= 1e-4
    assert report["vocoder_max_abs"] <= 1e-4
    frontend = chars_frontend.CharsFrontend(fastpitch_export / "tts.json")
    for text, nemo_ids in zip(spoken, report["tokens"], strict=True):
        assert frontend.encode(text) == nemo_ids, text


def test_export_refuses_what_is_not_a_checkpoint(tmp_path, cache_dir):
    bogus = tmp_path / "fastpitch.nemo"
    bogus.write_bytes(b"not a tar archive")
    with pytest.raises(ExportError, match="NeMo worker 'export' failed"):
        export_tts(bogus, bogus, cache_dir=cache_dir)
    with pytest.raises(ExportError, match=r"not a \.nemo file"):
        export_tts(tmp_path / "missing.nemo", bogus, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def grpc(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield client
    client.close()


def synthesize(client, text: str, pace: float | None = None) -> tuple[np.ndarray, int]:
    inputs = [grpcclient.InferInput("TEXT", [1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
    if pace is not None:
        inputs.append(grpcclient.InferInput("PACE", [1], "FP32"))
        inputs[1].set_data_from_numpy(np.array([pace], dtype=np.float32))
    result = client.infer("tts", inputs)
    return result.as_numpy("AUDIO"), int(result.as_numpy("SAMPLE_RATE")[0])


def test_served_ensemble_makes_whole_frames_of_audio(grpc, fastpitch_export):
    audio, rate = synthesize(grpc, "Hello world, this is June.")
    assert rate == 22050
    assert audio.dtype == np.float32 and audio.size > 0
    assert audio.size % 256 == 0  # HiFi-GAN upsamples each mel frame by the hop length
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0


def test_served_ensemble_pace_and_bad_text(grpc):
    normal, _ = synthesize(grpc, "The quick brown fox jumps over the lazy dog.")
    fast, _ = synthesize(grpc, "The quick brown fox jumps over the lazy dog.", pace=2.0)
    assert fast.size < normal.size
    assert synthesize(grpc, "🎉🎉")[0].size == 0  # nothing speakable
    with pytest.raises(Exception, match="limit is 5000"):
        synthesize(grpc, "z" * 5001)
    with pytest.raises(Exception, match="PACE"):
        synthesize(grpc, "Hi.", pace=0.1)
    assert synthesize(grpc, "Still serving.")[0].size > 0


def test_speak_api_uses_fastpitch_when_configured(
    triton, database_url, fastpitch_checkpoints, api_key
):
    acoustic, vocoder = fastpitch_checkpoints
    settings = settings_for(triton, database_url, tts_acoustic=acoustic, tts_vocoder=vocoder)
    assert settings.tts_model == "tts"
    with TestClient(create_app(settings), headers=bearer(api_key)) as client:
        r = client.post("/v1/speak", json={"text": "One. Two, three.", "format": "wav"})
        assert r.status_code == 200, r.text
        assert len(decode_audio(r.content, max_seconds=60)) > 0
        assert client.post("/v1/speak", json={"text": "😀"}).status_code == 422


def test_gpu_repository_runs_both_graphs_on_onnxruntime_with_tensorrt(
    tmp_path, cache_dir, fastpitch_checkpoints
):
    from exporters.repository import FASTPITCH_MODELS, build_repository, validate_repository

    acoustic, vocoder = fastpitch_checkpoints
    out = build_repository(
        profile="gpu",
        out=tmp_path / "repo",
        cache_dir=cache_dir,
        sources={"tts": str(acoustic)},
        options={"tts": {"vocoder": str(vocoder)}},
        models=FASTPITCH_MODELS,
    )
    configs = validate_repository(out)
    for name, graph in (("tts_acoustic", "fastpitch.onnx"), ("tts_vocoder", "hifigan.onnx")):
        assert configs[name].platform == "onnxruntime_onnx"
        assert configs[name].default_model_filename == graph
        assert (out / name / "1" / graph).is_file()
        assert not (out / name / "1" / "model.py").exists()
        accel = configs[name].optimization.execution_accelerators.gpu_execution_accelerator
        assert accel[0].name == "tensorrt"
    audio = configs["tts_vocoder"].output[0]
    assert (audio.name, list(audio.dims), list(audio.reshape.shape)) == ("audio", [-1], [1, 1, -1])
    assert (out / "tts_frontend" / "1" / "model.py").is_file()  # text stays in Python
