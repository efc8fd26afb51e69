"""openai-whisper ``.pt`` checkpoints -> Hugging Face ``WhisperForConditionalGeneration``.

The checkpoint is ``{"dims": {...}, "model_state_dict": {...}}`` with openai's names
(``encoder.blocks.N.attn.query`` ...). Renaming is all it takes. The file carries no
tokenizer: openai's package bundles tiktoken files instead. The vocabulary is fixed by the
vocabulary size, so the tokenizer and suppression lists come from the packaged
checkpoint with the same vocabulary (51865: multilingual, 51864: English-only).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from exporters.common import ExportError

log = logging.getLogger(__name__)

# openai name (regex) -> Hugging Face name. Order matters: cross_attn before attn.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^encoder\.positional_embedding$", "model.encoder.embed_positions.weight"),
    (r"^decoder\.positional_embedding$", "model.decoder.embed_positions.weight"),
    (r"^decoder\.token_embedding\.weight$", "model.decoder.embed_tokens.weight"),
    (r"^encoder\.(conv[12])\.", r"model.encoder.\1."),
    (r"^encoder\.ln_post\.", "model.encoder.layer_norm."),
    (r"^decoder\.ln\.", "model.decoder.layer_norm."),
    (
        r"^(encoder|decoder)\.blocks\.(\d+)\.cross_attn_ln\.",
        r"model.\1.layers.\2.encoder_attn_layer_norm.",
    ),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.cross_attn\.", r"model.\1.layers.\2.encoder_attn."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.attn_ln\.", r"model.\1.layers.\2.self_attn_layer_norm."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.attn\.", r"model.\1.layers.\2.self_attn."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.mlp_ln\.", r"model.\1.layers.\2.final_layer_norm."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.mlp\.0\.", r"model.\1.layers.\2.fc1."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.mlp\.2\.", r"model.\1.layers.\2.fc2."),
)
_PROJECTIONS = {
    ".query.": ".q_proj.",
    ".key.": ".k_proj.",
    ".value.": ".v_proj.",
    ".out.": ".out_proj.",
}


def hf_name(name: str) -> str:
    for pattern, replacement in _RENAMES:
        new, count = re.subn(pattern, replacement, name)
        if count:
            for old, proj in _PROJECTIONS.items():
                new = new.replace(old, proj)
            return new
    raise ExportError(f"unexpected weight {name!r} in the openai-whisper checkpoint")


def convert_openai_whisper(checkpoint: Path, out: Path, *, vocabularies: dict[int, Path]) -> Path:
    """Write a Hugging Face Whisper folder from an openai ``.pt`` file."""
    import torch

    from exporters.ct2_whisper import write_hf_whisper

    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExportError(
            f"{checkpoint} is not a readable openai-whisper checkpoint: {exc}"
        ) from exc
    if not isinstance(data, dict) or "dims" not in data or "model_state_dict" not in data:
        raise ExportError(
            f"{checkpoint} lacks 'dims' / 'model_state_dict' (not an openai-whisper checkpoint)"
        )
    dims = data["dims"]
    vocabulary = vocabularies.get(int(dims["n_vocab"]))
    if vocabulary is None:
        raise ExportError(
            f"no tokenizer known for a vocabulary of {dims['n_vocab']} (known: {sorted(vocabularies)})"
        )
    state = {hf_name(k): v.float().numpy() for k, v in data["model_state_dict"].items()}
    write_hf_whisper(
        state,
        encoder_heads=int(dims["n_audio_head"]),
        decoder_heads=int(dims["n_text_head"]),
        vocabulary=vocabulary,
        out=out,
    )
    log.info("converted openai-whisper %s -> %s", checkpoint, out)
    return out
