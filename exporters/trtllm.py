"""GPU engines with TensorRT-LLM: checkpoint conversion, then ``trtllm-build``.

These steps run where TensorRT-LLM is installed: the NGC image
``nvcr.io/nvidia/tritonserver:<release>-trtllm-python-py3``. Everywhere else they stop at the
first step with one line naming the missing tool. The commands are built from the
checkpoint's own metadata and unit-tested up to that boundary.

Whisper follows TensorRT-LLM's two stages (``examples/models/core/whisper``):
``convert_checkpoint.py`` turns an openai-whisper ``.pt`` into a TensorRT-LLM checkpoint
with ``encoder/`` and ``decoder/`` parts, and ``trtllm-build`` builds each into an engine.

Each build writes one folder that ``june repo build --profile gpu`` takes as it is:

- Whisper: ``engines/encoder``, ``engines/decoder``, and the serving files the CPU export
  also has (``whisper.json``, ``tokenizer.json``, ``mel_filters.npy``);
- LLM: ``engine/``, ``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``
  and ``llm.json`` (architecture, end tokens, context length).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from exporters.common import ExportError, progress

log = logging.getLogger(__name__)

TRTLLM_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3"


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ExportError(
            f"{name} not found: the gpu target needs TensorRT-LLM (run it in {TRTLLM_IMAGE})"
        )
    return found


def require_tensorrt_llm() -> None:
    try:
        import tensorrt_llm  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"tensorrt_llm is not installed: the gpu target needs TensorRT-LLM (run it in {TRTLLM_IMAGE})"
        ) from exc


@dataclass(frozen=True)
class WhisperEngineSpec:
    """Engine limits. Defaults follow TensorRT-LLM's Whisper example."""

    n_mels: int = 80
    max_batch_size: int = 8
    max_beam_width: int = 1
    max_prompt_len: int = 14
    max_new_tokens: int = 224  # Whisper's own sample length (half its 448 positions)
    precision: str = "float16"  # float16 | bfloat16 | float32
    weight_only: str | None = None  # None | int8 | int4

    @property
    def encoder_frames(self) -> int:
        return 3000


def whisper_convert_command(
    convert_script: Path, checkpoint: Path, out: Path, spec: WhisperEngineSpec
) -> list[str]:
    cmd = [
        sys.executable, str(convert_script),
        "--model_dir", str(checkpoint.parent),
        "--model_name", checkpoint.stem,
        "--output_dir", str(out),
        "--dtype", spec.precision,
    ]  # fmt: skip
    if spec.weight_only:
        cmd += ["--use_weight_only", "--weight_only_precision", spec.weight_only]
    return cmd


def whisper_build_commands(
    checkpoint_dir: Path, engine_dir: Path, spec: WhisperEngineSpec
) -> list[list[str]]:
    encoder = [
        "trtllm-build",
        "--checkpoint_dir", str(checkpoint_dir / "encoder"),
        "--output_dir", str(engine_dir / "encoder"),
        "--moe_plugin", "disable",
        "--max_batch_size", str(spec.max_batch_size),
        "--gemm_plugin", "disable",
        "--bert_attention_plugin", spec.precision,
        "--max_input_len", str(spec.encoder_frames),
        "--max_seq_len", str(spec.encoder_frames),
    ]  # fmt: skip
    decoder = [
        "trtllm-build",
        "--checkpoint_dir", str(checkpoint_dir / "decoder"),
        "--output_dir", str(engine_dir / "decoder"),
        "--moe_plugin", "disable",
        "--max_beam_width", str(spec.max_beam_width),
        "--max_batch_size", str(spec.max_batch_size),
        "--max_seq_len", str(spec.max_prompt_len + spec.max_new_tokens),
        "--max_input_len", str(spec.max_prompt_len),
        "--max_encoder_input_len", str(spec.encoder_frames),
        "--gemm_plugin", spec.precision,
        "--bert_attention_plugin", spec.precision,
        "--gpt_attention_plugin", spec.precision,
        # the first step's logits give the language and the no-speech probability
        "--gather_generation_logits",
    ]  # fmt: skip
    return [encoder, decoder]


def build_whisper_engines(
    checkpoint: Path,
    out: Path,
    *,
    convert_script: Path | None,
    spec: WhisperEngineSpec,
    cache_dir: Path,
) -> Path:
    """openai-whisper ``.pt`` -> TensorRT-LLM checkpoint -> encoder and decoder engines, plus
    the serving files; returns ``out``."""
    if checkpoint.suffix != ".pt" or not checkpoint.is_file():
        raise ExportError(
            f"the gpu target converts openai-whisper .pt checkpoints (TensorRT-LLM's format); got {checkpoint}"
        )
    require_tensorrt_llm()
    require_tool("trtllm-build")
    if convert_script is None or not convert_script.is_file():
        raise ExportError(
            "pass --convert-script: TensorRT-LLM's examples/models/core/whisper/convert_checkpoint.py "
            "(inside the TRT-LLM image under /app/tensorrt_llm/examples)"
        )
    from exporters.whisper import serving_files_for

    steps = [whisper_convert_command(convert_script, checkpoint, out / "checkpoint", spec)]
    steps += whisper_build_commands(out / "checkpoint", out / "engines", spec)
    with progress() as bar:
        task = bar.add_task("TensorRT-LLM whisper", total=len(steps) + 1)
        serving_files_for(checkpoint, out, cache_dir)
        bar.advance(task)
        for cmd in steps:
            _run(cmd)
            bar.advance(task)
    return out


def _run(cmd: list[str]) -> None:
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ExportError(f"{Path(cmd[0]).name} failed: {tail[-1] if tail else proc.returncode}")


# --- LLMs: Qwen family and Llama ---------------------------------------------------------
TRTLLM_LLM_CLASSES = {
    "Qwen2ForCausalLM": "QWenForCausalLM",
    "Qwen3ForCausalLM": "QWenForCausalLM",
    # TensorRT-LLM's Qwen class converts the mixtures of experts too (Qwen3-30B-A3B).
    "Qwen2MoeForCausalLM": "QWenForCausalLM",
    "Qwen3MoeForCausalLM": "QWenForCausalLM",
    "LlamaForCausalLM": "LLaMAForCausalLM",
}


@dataclass(frozen=True)
class LlmEngineSpec:
    max_batch_size: int = 8
    # None: the model's own context (YaRN-stretched where scaled); input gets all but
    # the reply's share.
    max_input_len: int | None = None
    max_seq_len: int | None = None
    reply_tokens: int = 2048
    dtype: str = "float16"  # float16 | bfloat16
    weight_only: str | None = None  # None | int8 | int4
    # KV cache blocks: a prompt prefix is reused in whole blocks, so a block no longer
    # than June's system prompt (about 60 tokens) lets every turn reuse it.
    tokens_per_block: int = 32


def engine_lengths(spec: LlmEngineSpec, context: int) -> tuple[int, int]:
    """``(max_input_len, max_seq_len)``: as the spec says, else the model's context."""
    seq = spec.max_seq_len or context
    if seq <= 0:
        raise ExportError("the checkpoint names no max_position_embeddings: set max_seq_len")
    return spec.max_input_len or max(1, seq - min(spec.reply_tokens, seq // 2)), seq


def llm_build_command(
    checkpoint_dir: Path, engine_dir: Path, spec: LlmEngineSpec, *, context: int = 0
) -> list[str]:
    """``trtllm-build`` for the LLM. Paged context attention is what lets the served
    engine (``enable_kv_cache_reuse``) reuse the KV cache of a shared prefix (the system
    prompt, a conversation's earlier turns) across requests instead of prefilling it. The
    lengths follow the model's context (``context``), unless the spec names them."""
    max_input, max_seq = engine_lengths(spec, context)
    return [
        "trtllm-build",
        "--checkpoint_dir", str(checkpoint_dir),
        "--output_dir", str(engine_dir),
        "--gemm_plugin", "auto",
        "--max_batch_size", str(spec.max_batch_size),
        "--max_input_len", str(max_input),
        "--max_seq_len", str(max_seq),
        "--use_paged_context_fmha", "enable",
        "--tokens_per_block", str(spec.tokens_per_block),
    ]  # fmt: skip


def convert_llm_checkpoint(hf_dir: Path, out: Path, architecture: str, spec: LlmEngineSpec) -> Path:
    """Hugging Face folder -> TensorRT-LLM checkpoint (config.json + rank0.safetensors)."""
    if architecture not in TRTLLM_LLM_CLASSES:
        raise ExportError(f"no TensorRT-LLM class for {architecture}")
    require_tensorrt_llm()
    import tensorrt_llm.models as trt_models  # type: ignore[import-not-found]

    cls = getattr(trt_models, TRTLLM_LLM_CLASSES[architecture])
    kwargs = {}
    if spec.weight_only:
        from tensorrt_llm.models.modeling_utils import QuantConfig  # type: ignore[import-not-found]
        from tensorrt_llm.quantization import QuantAlgo  # type: ignore[import-not-found]

        algo = {"int8": QuantAlgo.W8A16, "int4": QuantAlgo.W4A16}[spec.weight_only]
        kwargs["quant_config"] = QuantConfig(quant_algo=algo)
    model = cls.from_hugging_face(str(hf_dir), dtype=spec.dtype, **kwargs)
    model.save_checkpoint(str(out), save_config=True)
    return out


def build_llm_engines(
    hf_dir: Path,
    out: Path,
    architecture: str,
    spec: LlmEngineSpec,
    *,
    generation_fallback: dict | None = None,
) -> Path:
    """Hugging Face folder -> ``out/engine`` plus the tokenizer files; returns ``out``. A
    YaRN-scaled checkpoint (:func:`exporters.llm.apply_rope_scaling`) carries its
    ``rope_scaling`` into TensorRT-LLM's checkpoint, and the engine's lengths follow it."""
    from exporters.llm import context_length, write_serving_files

    require_tensorrt_llm()
    require_tool("trtllm-build")
    with progress() as bar:
        task = bar.add_task("TensorRT-LLM llm", total=3)
        write_serving_files(hf_dir, out, generation_fallback)
        bar.advance(task)
        checkpoint = convert_llm_checkpoint(hf_dir, out / "checkpoint", architecture, spec)
        bar.advance(task)
        _run(llm_build_command(checkpoint, out / "engine", spec, context=context_length(hf_dir)))
        bar.advance(task)
    return out
