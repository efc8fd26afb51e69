"""The gpu profile's ``asr`` pipeline on a real tritonserver, up to the TensorRT-LLM backend.

The repository is built for the gpu profile from a Whisper build folder. ``asr_features``
and the ``asr_whisper`` BLS model are the real ones; ``asr_tensorrt_llm`` keeps its config,
but its backend (TensorRT-LLM, GPU only) is played by tests/trtllm_standin/whisper_model.py
(greedy decoding on the cpu export's ONNX graphs, fed what the BLS model sends). What this
proves: Triton loads the pipeline as written; the BLS model's requests (prompt, language
detection, no-speech, suppressed tokens, windows) give the cpu profile's transcripts. What it
cannot prove: the real backend's behaviour.
"""

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.speech import clips
from exporters.repository import GPU_MODELS, build_repository
from exporters.whisper import export_whisper
from orchestrator.config import Settings
from orchestrator.triton.client import TritonGateway
from tests.conftest import make_triton

STANDIN = Path(__file__).parents[1] / "trtllm_standin" / "whisper_model.py"
BACKEND = Path(__file__).parents[2] / "model_repository" / "asr_whisper" / "1"
ASR_GPU = tuple(m for m in GPU_MODELS if m.name.startswith("asr"))


@pytest.fixture(scope="module")
def gpu_asr(tmp_path_factory, cache_dir, trtllm_builds, whisper_export):
    root = tmp_path_factory.mktemp("gpu-asr")
    # A float32 encoder build, so the stand-in sees the cpu profile's exact features.
    whisper = root / "whisper"
    shutil.copytree(trtllm_builds["whisper"], whisper)
    encoder = whisper / "engines/encoder/config.json"
    config = json.loads(encoder.read_text())
    config["pretrained_config"]["dtype"] = "float32"
    encoder.write_text(json.dumps(config))
    repo = build_repository(
        profile="gpu",
        out=root / "repo",
        cache_dir=cache_dir,
        models=ASR_GPU,
        engines={"whisper": whisper},
    )
    trt = repo / "asr_tensorrt_llm"
    text = (trt / "config.pbtxt").read_text()
    assert 'backend: "tensorrtllm"' in text
    (trt / "config.pbtxt").write_text(text.replace('backend: "tensorrtllm"', 'backend: "python"'))
    shutil.copy2(STANDIN, trt / "1" / "model.py")
    for code in ("whisper_decode.py", "whisper_rules.py"):
        shutil.copy2(BACKEND / code, trt / "1" / code)
    shutil.copy2(BACKEND.parent.parent / "common" / "onnx_graph.py", trt / "1" / "onnx_graph.py")
    # the stand-in decodes with the graphs the cpu profile serves (its default precision)
    served = export_whisper(
        "whisper-base",
        cache_dir=cache_dir,
        precision=Settings.model_fields["asr_precision"].default,
    )
    shutil.copytree(served, trt / "1" / "standin")
    server = make_triton(repo, root / "rt")
    server.start(timeout_s=180)
    yield server
    server.stop()


def transcribe(server, audio: np.ndarray, language: str | None):
    async def run():
        gateway = TritonGateway(server.grpc_url, timeout_s=120)
        try:
            return await gateway.transcribe(audio, language=language)
        finally:
            await gateway.close()

    return asyncio.run(run())


def test_gpu_pipeline_gives_the_cpu_transcripts(gpu_asr, triton):
    sample = clips()[:6]
    gpu = [transcribe(gpu_asr, audio, "en").text for _, audio in sample]
    cpu = [transcribe(triton, audio, "en").text for _, audio in sample]
    assert all(gpu), gpu
    assert gpu == cpu


def test_gpu_pipeline_detects_the_language_and_hears_silence(gpu_asr):
    _, audio = clips()[0]
    heard = transcribe(gpu_asr, audio, None)
    assert heard.language == "en" and heard.text
    assert heard.no_speech_prob < 0.5
    quiet = transcribe(gpu_asr, np.zeros(16000 * 3, dtype=np.float32), None)
    assert quiet.text == ""


def test_gpu_pipeline_transcribes_past_30_seconds_in_windows(gpu_asr, triton):
    audio = np.concatenate([a for _, a in clips()[:16]])
    assert len(audio) > 16000 * 30
    assert transcribe(gpu_asr, audio, "en").text == transcribe(triton, audio, "en").text
