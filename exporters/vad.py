"""Silero VAD: the ``vad`` model's weights, from the offline ``silero-vad`` package.

Silero VAD ships as ONNX already, so "export" checks the graph's interface (``input``,
``state``, ``sr`` -> ``output``, ``stateN``: version 5), and places it in the export cache
under a fixed name, keyed by its digest like every other export. A source is the package
name (default) or a path to a Silero VAD v5 ``.onnx`` file.
"""

from __future__ import annotations

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

TARGET = "vad"
EXPORTER_VERSION = "1"
DEFAULT_SOURCE = "silero-vad"
INPUTS = {"input", "state", "sr"}


def resolve_vad(source: str | Path | None) -> Path:
    if source is None or str(source) == DEFAULT_SOURCE:
        # the 16 kHz graph (the package's import needs torchaudio; its data does not)
        return package_dir("silero_vad", DEFAULT_SOURCE) / "data" / "silero_vad.onnx"
    path = Path(source).expanduser().resolve()
    if path.suffix != ".onnx" or not path.is_file():
        raise ExportError(f"{path} is not a Silero VAD .onnx file")
    return path


def check_graph(path: Path) -> None:
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise ExportError(f"{path}: not an ONNX model ({exc})") from exc
    names = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    if names != INPUTS:
        raise ExportError(
            f"{path}: inputs {sorted(names)}; a Silero VAD v5 graph takes {sorted(INPUTS)}"
        )


def export_vad(source: str | Path | None = None, *, cache_dir: Path, force: bool = False) -> Path:
    """Place the VAD graph in the export cache; returns the export folder."""
    model = resolve_vad(source)
    if not model.is_file():
        raise ExportError(f"{model} is missing: pip install --no-deps silero-vad")
    digest = digest_files(model.parent, [model])

    def build(out: Path) -> None:
        check_graph(model)
        shutil.copy2(model, out / "vad.onnx")
        ExportInfo(
            target=TARGET,
            exporter_version=EXPORTER_VERSION,
            source=str(source or DEFAULT_SOURCE),
            source_digest=digest,
            options={},
            artifacts={"vad.onnx": sha256_file(out / "vad.onnx")},
            extra={"sample_rate": 16000, "frame": 512},
        ).write(out)

    return cached_export(
        cache_dir=cache_dir,
        target=TARGET,
        exporter_version=EXPORTER_VERSION,
        source_digest=digest,
        options={},
        build=build,
        force=force,
    )
