"""Whisper as two ONNX-exportable torch modules built from a Hugging Face checkpoint.

- :class:`EncoderCrossKV`: log-mel ``[B, n_mels, F]`` and a key bias ``[B, F/2]`` -> per-layer
  cross-attention keys and values ``[L, B, H, F/2, Dh]``. ``F`` is the window's frame count:
  3000 for Whisper's 30 s, fewer for a shorter window (the positional embedding is sliced to
  it, as whisper.cpp's ``audio_ctx`` does). The key bias is added to every self-attention
  logit of that key position, in every layer and head: zeros leave Whisper as it is, and a
  shorter window gives its padding the weight a 30 s window's longer padding would have had
  (see ``whisper_decode.padding_key_bias``). The decoder never re-projects encoder states.
- :class:`DecoderStep`: one merged decoder graph with an explicit self-attention KV cache.
  ``input_ids [B, T]``, then each layer's ``past_key.i/past_value.i [B, H, P, Dh]`` (P may be
  0: the first step) and ``cross_key.i/cross_value.i [B, H, F/2, Dh]`` -> ``logits [B, T, V]``
  and each layer's cache grown to ``P + T`` (``present_key.i/present_value.i``). One input per
  layer, not one stacked tensor: taking a layer out of a stacked input copies it (ONNX
  Runtime's ``Split``), and for the cross-attention K/V that was 12 MB per generated token
  at a 10 s window: 1.2 of the 9.5 ms of kernel time per token, profiled.

Both reuse the checkpoint's own layers (projections, norms, MLPs); only the attention
arithmetic is written out, with plain tensors, so the graphs export cleanly and carry the
cache as ordinary inputs and outputs. Parity with ``WhisperForConditionalGeneration`` is
checked by the exporter and by the tests (greedy tokens identical).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[B, T, D]`` -> ``[B, H, T, D/H]``."""
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, T, Dh]`` -> ``[B, T, H*Dh]``."""
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float, mask: torch.Tensor | None
) -> torch.Tensor:
    scores = torch.matmul(q * scaling, k.transpose(-1, -2))
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class EncoderCrossKV(nn.Module):
    """The encoder written out layer by layer, so the frame count is a free axis.

    Hugging Face's ``WhisperEncoder`` insists on 3000 frames; the arithmetic is the same
    for fewer (convolutions, sliced positions, pre-norm self-attention, GELU MLP).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.model.encoder
        self.cross = nn.ModuleList([layer.encoder_attn for layer in model.model.decoder.layers])
        self.n_heads = model.config.decoder_attention_heads
        self.encoder_heads = model.config.encoder_attention_heads
        self.encoder_scaling = (model.config.d_model // self.encoder_heads) ** -0.5

    def encode(self, mel: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        bias = key_bias[:, None, None, :]  # [B, 1, 1, keys]: every head and query
        x = F.gelu(enc.conv1(mel))
        x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        for layer in enc.layers:
            h = layer.self_attn_layer_norm(x)
            attn = layer.self_attn
            out = _attend(
                _heads(attn.q_proj(h), self.encoder_heads),
                _heads(attn.k_proj(h), self.encoder_heads),
                _heads(attn.v_proj(h), self.encoder_heads),
                self.encoder_scaling,
                bias,
            )
            x = x + attn.out_proj(_merge(out))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        return enc.layer_norm(x)

    def forward(
        self, mel: torch.Tensor, key_bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.encode(mel, key_bias)
        keys = [_heads(attn.k_proj(states), self.n_heads) for attn in self.cross]
        values = [_heads(attn.v_proj(states), self.n_heads) for attn in self.cross]
        return torch.stack(keys), torch.stack(values)


class DecoderStep(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        decoder = model.model.decoder
        self.embed_tokens = decoder.embed_tokens
        self.embed_positions = decoder.embed_positions
        self.layers = decoder.layers
        self.layer_norm = decoder.layer_norm
        self.n_heads = model.config.decoder_attention_heads
        self.scaling = (model.config.d_model // self.n_heads) ** -0.5

    def forward(
        self, input_ids: torch.Tensor, *per_layer: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """``per_layer``: past keys, past values, cross keys, cross values, a tensor per layer
        each (see :func:`decoder_names`). Returns the logits, then the new keys and values."""
        n = len(self.layers)
        past_key, past_value, cross_key, cross_value = (
            per_layer[i * n : (i + 1) * n] for i in range(4)
        )
        past = past_key[0].shape[2]
        steps = input_ids.shape[1]
        positions = torch.arange(steps, device=input_ids.device) + past
        x = self.embed_tokens(input_ids) + self.embed_positions.weight[positions]
        # Causal mask over [past + new]: row i may see columns <= past + i.
        cols = torch.arange(past + steps, device=input_ids.device)
        allowed = cols.unsqueeze(0) <= positions.unsqueeze(1)
        mask = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill(~allowed, float("-inf"))
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            h = layer.self_attn_layer_norm(x)
            attn = layer.self_attn
            k = torch.cat([past_key[i], _heads(attn.k_proj(h), self.n_heads)], dim=2)
            v = torch.cat([past_value[i], _heads(attn.v_proj(h), self.n_heads)], dim=2)
            keys.append(k)
            values.append(v)
            out = _attend(_heads(attn.q_proj(h), self.n_heads), k, v, self.scaling, mask)
            x = x + attn.out_proj(_merge(out))

            h = layer.encoder_attn_layer_norm(x)
            cross = layer.encoder_attn
            out = _attend(
                _heads(cross.q_proj(h), self.n_heads),
                cross_key[i],
                cross_value[i],
                self.scaling,
                None,
            )
            x = x + cross.out_proj(_merge(out))

            h = layer.final_layer_norm(x)
            x = x + layer.fc2(F.gelu(layer.fc1(h)))
        x = self.layer_norm(x)
        logits = torch.matmul(x, self.embed_tokens.weight.t())
        return (logits, *keys, *values)


def decoder_names(n_layers: int) -> tuple[list[str], list[str]]:
    """The decoder graph's input and output names, in :meth:`DecoderStep.forward` order."""

    def each(name: str) -> list[str]:
        return [f"{name}.{i}" for i in range(n_layers)]

    inputs = ["input_ids", *each("past_key"), *each("past_value")]
    inputs += [*each("cross_key"), *each("cross_value")]
    return inputs, ["logits", *each("present_key"), *each("present_value")]
