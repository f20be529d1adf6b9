"""Pieces of a forward pass written from nothing but weight views, to check an adapter's views against HF.

A family's weight-view test composes these into its architecture's forward pass and compares the logits
with the HF model's own (``bridge_llama/tests/test_llama_weights.py`` is an example)::

    model = wrapped_with_random_biases(MyAdapter.example_config())
    z = causal_attention(*(project(x, w, b) for w, b in ...), scale=cfg.d_head**-0.5)

Everything here is plain math on tensors (no bridge code runs), so a wrong view cannot hide behind
the code that builds it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bridge.kernel.components.norm import norm_epsilon
from bridge.testing.fixtures import build_tiny_model, tiny_tokenizer

#: Two rows of tiny-tokenizer ids with repeats, for forward passes from views.
REFERENCE_TOKENS = torch.tensor([[0, 5, 17, 42, 9, 77, 3, 11, 64, 2], [0, 8, 8, 100, 2, 64, 31, 7, 7, 120]])


def wrapped_with_random_biases(config: Any, seed: int = 1, **build_kwargs: Any) -> Any:
    """A bridge over a tiny model of ``config`` whose 1-D parameters (biases, norm weights) are moved off
    their initial values, so that a misplaced bias or norm weight changes the output."""
    import bridge

    hf_model = build_tiny_model(config, **build_kwargs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in hf_model.parameters():
            if param.ndim == 1:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return bridge.wrap(hf_model, tiny_tokenizer())


def layer_norm(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps) * w + b`` over the last axis, with an HF LayerNorm's parameters."""
    centred = x - x.mean(-1, keepdim=True)
    out = centred / (centred.pow(2).mean(-1, keepdim=True) + norm_epsilon(module)).sqrt()
    if getattr(module, "weight", None) is not None:
        out = out * module.weight
    return out + module.bias if getattr(module, "bias", None) is not None else out


def rms_norm(x: torch.Tensor, module: nn.Module, weight_offset: float = 0.0) -> torch.Tensor:
    """``x / sqrt(mean(x²) + eps) * (weight_offset + w)`` over the last axis (Gemma: ``weight_offset=1``)."""
    return x / (x.pow(2).mean(-1, keepdim=True) + norm_epsilon(module)).sqrt() * (weight_offset + module.weight)


def rotate(x: torch.Tensor, theta: float, rotary_dim: int | None = None, interleaved: bool = False) -> torch.Tensor:
    """Rotary embedding at positions ``0..p-1`` of the first ``rotary_dim`` features (default: all) of
    ``x`` ``[b, p, …, d]``; features paired as halves ``(i, i + r/2)`` or, ``interleaved``, as neighbours
    ``(2i, 2i + 1)``; frequencies ``theta^(-2i/r)``."""
    r = rotary_dim or x.shape[-1]
    angles = torch.arange(x.shape[1], dtype=torch.float32)[:, None] * theta ** (-torch.arange(0, r, 2) / r)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 3) + (r // 2,)
    cos, sin = angles.cos().reshape(shape), angles.sin().reshape(shape)
    rot, rest = x[..., :r], x[..., r:]
    if interleaved:
        first, second = rot[..., 0::2], rot[..., 1::2]
        rotated = torch.stack([first * cos - second * sin, second * cos + first * sin], dim=-1).flatten(-2)
    else:
        first, second = rot.chunk(2, dim=-1)
        rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
    return torch.cat([rotated, rest], dim=-1)


def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` ``[b, p, d_model]`` through per-head views ``W`` ``[h, d_model, d]`` (plus ``b`` ``[h, d]``):
    ``[b, p, h, d]``."""
    out = torch.einsum("bpm,hmd->bphd", x, weight)
    return out if bias is None else out + bias


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    bias: torch.Tensor | float = 0.0,
    window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Softmax attention ``[b, p, h, d]`` → ``z`` ``[b, p, h, d_v]``: scores ``q·k × scale``, soft-capped
    (``tanh(s / cap) × cap``), plus ``bias`` (broadcast to ``[b, h, q, k]``), causal and (with ``window``)
    keys at least ``window`` positions back masked."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores + bias
    p = q.shape[1]
    query, key = torch.arange(p)[:, None], torch.arange(p)[None, :]
    masked = key > query
    if window is not None:
        masked = masked | (query - key >= window)
    return torch.einsum("bhqk,bkhd->bqhd", scores.masked_fill(masked, float("-inf")).softmax(-1), v)


def attention_output(z: torch.Tensor, attn: Any) -> torch.Tensor:
    """``Σ_h z_h W_O[h] + b_O``: ``z`` ``[b, p, h, d]`` → ``[b, p, d_model]``."""
    return torch.einsum("bqhd,hdm->bqm", z, attn.W_O) + attn.b_O
