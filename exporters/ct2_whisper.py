"""CTranslate2 (faster-whisper) Whisper folders -> Hugging Face ``WhisperForConditionalGeneration``.

The conversion is a lossless re-layout of the weights. Whisper weights ship offline only in
this format (pip packages of faster-whisper models), so it is how the embedded default
gets real ASR weights.

``model.bin`` layout (CTranslate2 binary version 6, as ``ctranslate2.specs.model_spec``
writes it, little-endian):

    u32 binary_version | str spec_name | u32 spec_revision | u32 n_variables
    n_variables x (str name | u8 rank | rank x u32 dim | u8 dtype | u32 n_bytes | bytes)
    u32 n_aliases | n_aliases x (str alias | str target)

where ``str`` is ``u16 length`` (including a trailing NUL) followed by the UTF-8 bytes and
that NUL, and ``dtype`` indexes (float32, int8, int16, int32, float16, bfloat16).
Quantised int8 weights carry a ``<name>_scale`` variable; they are dequantised here.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from exporters.common import ExportError

log = logging.getLogger(__name__)

_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
SUPPORTED_BINARY_VERSIONS = (5, 6)


def _read(f: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ExportError("model.bin is truncated")
    return struct.unpack("<" + fmt, data)


def _read_string(f: BinaryIO) -> str:
    (length,) = _read(f, "H")
    raw = f.read(length)
    if len(raw) != length:
        raise ExportError("model.bin is truncated")
    return raw[:-1].decode("utf-8")


def _to_numpy(raw: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":
        as_u16 = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return as_u16.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)


def iter_ct2_variables(model_bin: Path) -> Iterator[tuple[str, np.ndarray | str]]:
    """Yield ``(name, array)`` for each variable, then ``(alias, target_name)`` for aliases."""
    with model_bin.open("rb") as f:
        (version,) = _read(f, "I")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise ExportError(
                f"{model_bin}: CTranslate2 binary version {version} is not supported "
                f"(supported: {SUPPORTED_BINARY_VERSIONS})"
            )
        spec = _read_string(f)
        if spec != "WhisperSpec":
            raise ExportError(f"{model_bin} holds a {spec}, not a Whisper model")
        _read(f, "I")  # spec revision
        (count,) = _read(f, "I")
        for _ in range(count):
            name = _read_string(f)
            (rank,) = _read(f, "B")
            shape = _read(f, "I" * rank) if rank else ()
            (dtype_id,) = _read(f, "B")
            (n_bytes,) = _read(f, "I")
            raw = f.read(n_bytes)
            if len(raw) != n_bytes or dtype_id >= len(_DTYPES):
                raise ExportError(f"{model_bin} is truncated or corrupt (variable {name!r})")
            yield name, _to_numpy(raw, _DTYPES[dtype_id], tuple(shape))
        (n_aliases,) = _read(f, "I")
        for _ in range(n_aliases):
            yield _read_string(f), _read_string(f)


def read_ct2_weights(model_bin: Path) -> dict[str, np.ndarray]:
    """All variables as float32 arrays (int8 dequantised, aliases resolved)."""
    raw: dict[str, np.ndarray] = {}
    aliases: dict[str, str] = {}
    for name, value in iter_ct2_variables(model_bin):
        if isinstance(value, str):
            aliases[name] = value
        else:
            raw[name] = value
    for alias, target in aliases.items():
        raw[alias] = raw[target]
    weights: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        if name.endswith("_scale"):
            continue
        if value.dtype == np.int8 and f"{name}_scale" in raw:
            scale = raw[f"{name}_scale"].astype(np.float32)
            value = value.astype(np.float32) / scale.reshape(-1, *([1] * (value.ndim - 1)))
        weights[name] = np.asarray(value, dtype=np.float32) if value.dtype.kind == "f" else value
    return weights


def _split_rows(value: np.ndarray, parts: int) -> list[np.ndarray]:
    rows = value.shape[0] // parts
    return [value[i * rows : (i + 1) * rows] for i in range(parts)]


def _attention(
    out: dict[str, np.ndarray], w: dict[str, np.ndarray], src: str, dst: str, *, fused: str
) -> None:
    """CT2 fuses projections: ``qkv`` (self-attention) or ``q`` + ``kv`` (cross-attention)."""
    if fused == "qkv":
        q_w, k_w, v_w = _split_rows(w[f"{src}/linear_0/weight"], 3)
        q_b, _k_b, v_b = _split_rows(w[f"{src}/linear_0/bias"], 3)
        out_name = f"{src}/linear_1"
    else:
        q_w, q_b = w[f"{src}/linear_0/weight"], w[f"{src}/linear_0/bias"]
        k_w, v_w = _split_rows(w[f"{src}/linear_1/weight"], 2)
        _k_b, v_b = _split_rows(w[f"{src}/linear_1/bias"], 2)
        out_name = f"{src}/linear_2"
    # Whisper's key projection has no bias (CT2 stores zeros there).
    out.update(
        {
            f"{dst}.q_proj.weight": q_w,
            f"{dst}.q_proj.bias": q_b,
            f"{dst}.k_proj.weight": k_w,
            f"{dst}.v_proj.weight": v_w,
            f"{dst}.v_proj.bias": v_b,
            f"{dst}.out_proj.weight": w[f"{out_name}/weight"],
            f"{dst}.out_proj.bias": w[f"{out_name}/bias"],
        }
    )


def _norm(out: dict[str, np.ndarray], w: dict[str, np.ndarray], src: str, dst: str) -> None:
    out[f"{dst}.weight"] = w[f"{src}/gamma"]
    out[f"{dst}.bias"] = w[f"{src}/beta"]


def _linear(out: dict[str, np.ndarray], w: dict[str, np.ndarray], src: str, dst: str) -> None:
    out[f"{dst}.weight"] = w[f"{src}/weight"]
    out[f"{dst}.bias"] = w[f"{src}/bias"]


def ct2_to_hf_state_dict(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename (and un-fuse) CT2 Whisper variables into ``WhisperForConditionalGeneration`` keys."""
    out: dict[str, np.ndarray] = {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        _linear(out, w, f"encoder/{conv}", f"{enc}.{conv}")
    out[f"{enc}.embed_positions.weight"] = w["encoder/position_encodings/encodings"]
    _norm(out, w, "encoder/layer_norm", f"{enc}.layer_norm")
    for i in range(count_layers(w, "encoder")):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        _norm(out, w, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        _attention(out, w, f"{src}/self_attention", f"{dst}.self_attn", fused="qkv")
        _norm(out, w, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        _linear(out, w, f"{src}/ffn/linear_0", f"{dst}.fc1")
        _linear(out, w, f"{src}/ffn/linear_1", f"{dst}.fc2")
    out[f"{dec}.embed_tokens.weight"] = w["decoder/embeddings/weight"]
    out[f"{dec}.embed_positions.weight"] = w["decoder/position_encodings/encodings"]
    _norm(out, w, "decoder/layer_norm", f"{dec}.layer_norm")
    for i in range(count_layers(w, "decoder")):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        _norm(out, w, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        _attention(out, w, f"{src}/self_attention", f"{dst}.self_attn", fused="qkv")
        _norm(out, w, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        _attention(out, w, f"{src}/attention", f"{dst}.encoder_attn", fused="q_kv")
        _norm(out, w, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        _linear(out, w, f"{src}/ffn/linear_0", f"{dst}.fc1")
        _linear(out, w, f"{src}/ffn/linear_1", f"{dst}.fc2")
    return out


def count_layers(w: dict[str, np.ndarray], side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in w:
        n += 1
    if n == 0:
        raise ExportError(f"no {side} layers found in model.bin")
    return n


def find_model_bin(folder: Path) -> Path:
    single = folder / "model.bin"
    if single.is_file():
        return single
    raise ExportError(f"{folder} has no model.bin")


def convert_ct2_whisper(folder: Path, out: Path) -> Path:
    """Write a Hugging Face Whisper folder (config, generation config, weights, tokenizer)."""
    weights = read_ct2_weights(find_model_bin(folder))
    write_hf_whisper(
        ct2_to_hf_state_dict(weights),
        encoder_heads=int(weights["encoder/num_heads"]),
        decoder_heads=int(weights["decoder/num_heads"]),
        vocabulary=folder,
        out=out,
    )
    log.info("converted CTranslate2 Whisper %s -> %s", folder, out)
    return out


def _layers(state: dict[str, np.ndarray], prefix: str) -> int:
    n = 0
    while f"{prefix}.layers.{n}.fc1.weight" in state:
        n += 1
    return n


def write_hf_whisper(
    state: dict[str, np.ndarray],
    *,
    encoder_heads: int,
    decoder_heads: int,
    vocabulary: Path,
    out: Path,
) -> Path:
    """Save ``WhisperForConditionalGeneration`` weights with config and generation config.

    Sizes come from the weights' shapes; special tokens from ``vocabulary/tokenizer.json``;
    suppression lists, language ids and alignment heads from ``vocabulary/config.json`` (the
    faster-whisper layout).
    """
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    extra = json.loads((vocabulary / "config.json").read_text())
    tokenizer_json = json.loads((vocabulary / "tokenizer.json").read_text())
    special = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}

    def token(name: str) -> int:
        if name not in special:
            raise ExportError(f"tokenizer.json lacks the special token {name}")
        return int(special[name])

    vocab_size, d_model = state["model.decoder.embed_tokens.weight"].shape
    # Whisper's own rule: English-only checkpoints have the smaller vocabulary. CT2's config
    # lists language ids for those too, and they would point at the wrong tokens.
    multilingual = int(vocab_size) >= 51865
    lang_ids = [int(i) for i in extra.get("lang_ids") or []] if multilingual else []
    id_to_special = {v: k for k, v in special.items()}
    no_speech = "<|nospeech|>" if "<|nospeech|>" in special else "<|nocaptions|>"
    config = WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(state["model.encoder.conv1.weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=_layers(state, "model.encoder"),
        decoder_layers=_layers(state, "model.decoder"),
        encoder_attention_heads=encoder_heads,
        decoder_attention_heads=decoder_heads,
        encoder_ffn_dim=int(state["model.encoder.layers.0.fc1.weight"].shape[0]),
        decoder_ffn_dim=int(state["model.decoder.layers.0.fc1.weight"].shape[0]),
        max_source_positions=int(state["model.encoder.embed_positions.weight"].shape[0]),
        max_target_positions=int(state["model.decoder.embed_positions.weight"].shape[0]),
        decoder_start_token_id=token("<|startoftranscript|>"),
        eos_token_id=token("<|endoftext|>"),
        bos_token_id=token("<|endoftext|>"),
        pad_token_id=token("<|endoftext|>"),
        tie_word_embeddings=True,
    )
    if config.encoder_layers == 0 or config.decoder_layers == 0:
        raise ExportError("the checkpoint has no encoder or decoder layers")
    model = WhisperForConditionalGeneration(config).eval()
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).float() for k, v in state.items()}
    tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ExportError(f"weights do not fit Whisper: missing {missing}, unexpected {unexpected}")

    multilingual_fields = (
        {
            "lang_to_id": {id_to_special[i]: i for i in lang_ids},
            "task_to_id": {
                "transcribe": token("<|transcribe|>"),
                "translate": token("<|translate|>"),
            },
        }
        if lang_ids
        else {}  # English-only: no language slot in the prompt (transformers adds one if present)
    )
    generation = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=[int(i) for i in extra.get("suppress_ids") or []],
        begin_suppress_tokens=[int(i) for i in extra.get("suppress_ids_begin") or []],
        no_timestamps_token_id=token("<|notimestamps|>"),
        is_multilingual=bool(lang_ids),
        alignment_heads=extra.get("alignment_heads"),
        no_speech_token_id=token(no_speech),
        max_initial_timestamp_index=50,
        return_timestamps=False,
        **multilingual_fields,
    )
    generation._from_model_config = False  # keep lang_to_id on reload (transformers 5)
    model.generation_config = generation
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "vocabulary.txt"):
        if (vocabulary / name).is_file():
            (out / name).write_bytes((vocabulary / name).read_bytes())
    return out
