"""TensorRT-LLM engine builds: tested up to the missing tool, and run where it exists."""

import os
import shutil
from pathlib import Path

import pytest

from exporters.common import ExportError
from exporters.trtllm import (
    WhisperEngineSpec,
    build_whisper_engines,
    require_tool,
    whisper_build_commands,
    whisper_convert_command,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_build_commands_follow_the_spec(tmp_path):
    spec = WhisperEngineSpec(max_batch_size=4, max_beam_width=2, precision="bfloat16")
    encoder, decoder = whisper_build_commands(tmp_path / "ckpt", tmp_path / "eng", spec)
    assert encoder[0] == decoder[0] == "trtllm-build"
    assert encoder[encoder.index("--checkpoint_dir") + 1] == str(tmp_path / "ckpt" / "encoder")
    assert encoder[encoder.index("--max_input_len") + 1] == "3000"
    assert decoder[decoder.index("--max_encoder_input_len") + 1] == "3000"
    assert decoder[decoder.index("--max_seq_len") + 1] == str(14 + 224)
    assert decoder[decoder.index("--max_beam_width") + 1] == "2"
    assert decoder[decoder.index("--gpt_attention_plugin") + 1] == "bfloat16"
    assert "--gather_generation_logits" in decoder  # asr_whisper reads the first step's logits


def test_convert_command_weight_only(tmp_path):
    spec = WhisperEngineSpec(weight_only="int8")
    cmd = whisper_convert_command(
        tmp_path / "convert.py", tmp_path / "base.pt", tmp_path / "out", spec
    )
    assert cmd[cmd.index("--model_name") + 1] == "base"
    assert "--use_weight_only" in cmd and cmd[-1] == "int8"


@pytest.mark.skipif(
    shutil.which("trtllm-build") is not None, reason="TensorRT-LLM is installed here"
)
def test_missing_tool_is_one_clear_line(tmp_path):
    with pytest.raises(
        ExportError, match="trtllm-build not found: the gpu target needs TensorRT-LLM"
    ) as err:
        require_tool("trtllm-build")
    assert "\n" not in str(err.value)
    checkpoint = tmp_path / "base.pt"
    checkpoint.write_bytes(b"x")
    with pytest.raises(ExportError, match="TensorRT-LLM"):
        build_whisper_engines(
            checkpoint,
            tmp_path / "out",
            convert_script=None,
            spec=WhisperEngineSpec(),
            cache_dir=tmp_path,
        )


def test_gpu_target_needs_an_openai_checkpoint(tmp_path):
    with pytest.raises(ExportError, match=r"openai-whisper \.pt"):
        build_whisper_engines(
            tmp_path / "folder",
            tmp_path / "out",
            convert_script=None,
            spec=WhisperEngineSpec(),
            cache_dir=tmp_path,
        )


@pytest.mark.gpu
@pytest.mark.skipif(
    shutil.which("trtllm-build") is None
    or not os.environ.get("JUNE_WHISPER_PT")
    or not os.environ.get("JUNE_TRTLLM_WHISPER_CONVERT"),
    reason="needs a GPU with TensorRT-LLM (NGC trtllm image), JUNE_WHISPER_PT (openai .pt) "
    "and JUNE_TRTLLM_WHISPER_CONVERT (TensorRT-LLM's whisper convert_checkpoint.py)",
)
def test_trtllm_whisper_engines_build(tmp_path):  # pragma: no cover - GPU hosts only
    from exporters.repository import check_engine_folder

    folder = build_whisper_engines(
        Path(os.environ["JUNE_WHISPER_PT"]),
        tmp_path,
        convert_script=Path(os.environ["JUNE_TRTLLM_WHISPER_CONVERT"]),
        spec=WhisperEngineSpec(),
        cache_dir=tmp_path / "cache",
    )
    assert any((folder / "engines/encoder").glob("*.engine"))
    assert any((folder / "engines/decoder").glob("*.engine"))
    check_engine_folder("whisper", folder)  # what `june repo build --profile gpu` takes


def test_llm_build_command(tmp_path):
    from exporters.trtllm import LlmEngineSpec, llm_build_command

    cmd = llm_build_command(
        tmp_path / "ckpt", tmp_path / "engine", LlmEngineSpec(max_batch_size=16), context=4096
    )
    assert cmd[0] == "trtllm-build"
    assert cmd[cmd.index("--max_batch_size") + 1] == "16"
    assert cmd[cmd.index("--max_seq_len") + 1] == "4096"  # the model's context
    assert cmd[cmd.index("--max_input_len") + 1] == "2048"
    # Qwen3 with YaRN x4: 32768 native -> 131072, and the engine follows it
    long = llm_build_command(tmp_path / "c", tmp_path / "e", LlmEngineSpec(), context=131072)
    assert long[long.index("--max_seq_len") + 1] == "131072"
    assert long[long.index("--max_input_len") + 1] == str(131072 - 2048)
    named = llm_build_command(tmp_path / "c", tmp_path / "e", LlmEngineSpec(max_seq_len=8192))
    assert named[named.index("--max_seq_len") + 1] == "8192"
    with pytest.raises(ExportError, match="max_position_embeddings"):
        llm_build_command(tmp_path / "c", tmp_path / "e", LlmEngineSpec(), context=0)
    # the served config turns on enable_kv_cache_reuse; the engine must be built for it
    assert cmd[cmd.index("--use_paged_context_fmha") + 1] == "enable"
    assert int(cmd[cmd.index("--tokens_per_block") + 1]) <= 64
    config = (REPO_ROOT / "model_repository/llm_tensorrt_llm/config.pbtxt").read_text()
    assert 'key: "enable_kv_cache_reuse"\n  value: { string_value: "true" }' in config


@pytest.mark.skipif(
    shutil.which("trtllm-build") is not None, reason="TensorRT-LLM is installed here"
)
def test_llm_gpu_target_without_tensorrt_llm(tmp_path):
    from exporters.trtllm import LlmEngineSpec, build_llm_engines, convert_llm_checkpoint

    with pytest.raises(ExportError, match="tensorrt_llm is not installed"):
        build_llm_engines(tmp_path, tmp_path / "out", "Qwen2ForCausalLM", LlmEngineSpec())
    with pytest.raises(ExportError, match="no TensorRT-LLM class for GPT2LMHeadModel"):
        convert_llm_checkpoint(tmp_path, tmp_path / "out", "GPT2LMHeadModel", LlmEngineSpec())


@pytest.mark.gpu
@pytest.mark.skipif(
    shutil.which("trtllm-build") is None or not os.environ.get("JUNE_QWEN_HF_DIR"),
    reason="needs a GPU with TensorRT-LLM (NGC trtllm image) and JUNE_QWEN_HF_DIR (a Qwen checkpoint)",
)
def test_trtllm_qwen_engine_builds(tmp_path):  # pragma: no cover - GPU hosts only
    from exporters.repository import check_engine_folder
    from exporters.trtllm import LlmEngineSpec, build_llm_engines

    folder = build_llm_engines(
        Path(os.environ["JUNE_QWEN_HF_DIR"]), tmp_path, "Qwen2ForCausalLM", LlmEngineSpec()
    )
    assert any((folder / "engine").glob("*.engine"))
    check_engine_folder("llm", folder)  # what `june repo build --profile gpu` takes


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has a GPU")
def test_gpu_check_stops_in_one_line_without_a_gpu(tmp_path):
    """benchmarks/gpu_check.sh is ready for a GPU host; here it stops at its first step."""
    import subprocess

    script = REPO_ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0  # it parses
    proc = subprocess.run(
        ["bash", str(script), str(tmp_path / "work")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3
    stops = [line for line in proc.stderr.splitlines() if "STOP" in line]
    assert stops == ["gpu_check: STOP: no NVIDIA driver here (nvidia-smi not found)"]
