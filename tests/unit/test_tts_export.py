"""The TTS exporter up to the tools this machine lacks (TensorRT's trtexec, a NeMo env)."""

import json

import pytest

from exporters.common import ExportError
from exporters.tts import build_tensorrt_plans, nemo_python, plan_specs, trtexec_command
from tests.conftest import load_backend_module

chars_frontend = load_backend_module("tts_frontend", "chars_frontend")


def test_trtexec_commands_cover_the_dynamic_shapes(tmp_path):
    fastpitch, hifigan = plan_specs(80, max_tokens=512, max_frames=2048)
    cmd = trtexec_command("/opt/trt/trtexec", tmp_path / "x", tmp_path / "y", fastpitch, fp16=True)
    assert cmd[0] == "/opt/trt/trtexec"
    assert f"--onnx={tmp_path / 'x' / 'fastpitch.onnx'}" in cmd
    assert f"--saveEngine={tmp_path / 'y' / 'fastpitch.plan'}" in cmd
    assert "--minShapes=text:1x1,pitch:1x1,pace:1x1" in cmd
    assert "--maxShapes=text:1x512,pitch:1x512,pace:1x512" in cmd
    assert cmd[-1] == "--fp16"
    cmd = trtexec_command("trtexec", tmp_path, tmp_path, hifigan, fp16=False)
    assert "--optShapes=spec:1x80x512" in cmd and "--maxShapes=spec:1x80x2048" in cmd
    assert "--fp16" not in cmd


@pytest.mark.skipif(
    __import__("shutil").which("trtexec") is not None, reason="trtexec is installed here"
)
def test_gpu_plans_fail_clearly_without_trtexec(tmp_path):
    with pytest.raises(ExportError, match="trtexec not found: the gpu target needs TensorRT"):
        build_tensorrt_plans(tmp_path, tmp_path / "out")


def test_missing_nemo_environment_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.delenv("JUNE_NEMO_PYTHON", raising=False)
    with pytest.raises(ExportError, match="run `make nemo-env`"):
        nemo_python(tmp_path)
    monkeypatch.setenv("JUNE_NEMO_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(ExportError, match="JUNE_NEMO_PYTHON"):
        nemo_python(tmp_path)


@pytest.fixture
def frontend(tmp_path):
    tokens = [" ", *"abcdefghijklmnopqrstuvwxyz", "'", ",", ".", "!", "?", "-", "<pad>", "<oov>"]
    meta = {
        "sample_rate": 22050,
        "n_mels": 80,
        "hop_length": 256,
        "n_speakers": 1,
        "tokenizer": {
            "tokens": tokens,
            "pad": tokens.index("<pad>"),
            "space": 0,
            "oov": tokens.index("<oov>"),
            "punct": [",", ".", "!", "?", "-"],
            "pad_with_space": True,
            "lowercase": True,
        },
    }
    path = tmp_path / "tts.json"
    path.write_text(json.dumps(meta))
    return chars_frontend.CharsFrontend(path, max_chars=100)


def test_chars_frontend_rules(frontend):
    ids = frontend.encode("Héllo,  World!!  ")
    text = "".join(frontend.tokens[i] for i in ids)
    assert text == " hello, world!! "  # accents stripped, one space, padded with spaces
    assert frontend.encode("\u2019") == []  # punctuation alone says nothing
    assert frontend.encode("don\u2019t") == frontend.encode("don't")


def test_chars_frontend_request_checks(frontend):
    inputs = frontend("It costs $5.", pace=1.5)
    assert inputs.text.shape == inputs.pitch.shape == inputs.pace.shape
    assert inputs.text.shape[0] == 1 and (inputs.pace == 1.5).all() and (inputs.pitch == 0).all()
    assert "five dollars" in "".join(frontend.tokens[i] for i in inputs.text[0])
    assert frontend("🎉").text.shape == (1, 0)
    with pytest.raises(chars_frontend.TextTooLong):
        frontend("a" * 101)
    with pytest.raises(ValueError, match="SPEAKER"):
        frontend("hi", speaker=3)
