"""Attention components for HF modules that do not call ``transformers``' ``AttentionInterface``.

BLOOM, MPT and Falcon compute attention inline, so the core seam never sees them. While one of a
layer's hook points has a hook, its HF attention module's ``forward`` is replaced by a re-expression
of the same computation that fires every hook in order; otherwise the HF code runs untouched.

Hook points (batch first):

- ``hook_q`` ``[b, p, n_heads, d_head]``, ``hook_k``/``hook_v`` ``[b, p, n_kv_heads, d_head]``: split
  from the fused projection (after MPT's ``clip_qkv`` clamp);
- ``hook_rot_q``/``hook_rot_k``: after rotary (rotary Falcon only);
- ``hook_alibi`` ``[b or 1, n_heads, 1, k]``: the ALiBi bias added to the scaled scores;
- ``hook_attn_scores`` ``[b, n_heads, q, k]``: ``q·k · scale + alibi + mask``, pre-softmax (masked
  entries hold the dtype's minimum, added);
- ``hook_pattern`` ``[b, n_heads, q, k]``; ``hook_z`` ``[b, p, n_heads, d_head]``;
- ``hook_result`` ``[b, p, n_heads, d_model]`` (opt-in): per-head output, summed into the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import einops
import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.falcon.modeling_falcon import apply_rotary_pos_emb

from bridge.components import (
    AttentionWeights,
    Component,
    ForwardOverride,
    FusedLayout,
    QKVWeights,
    fused_qkv,
    weight_in_out,
)
from bridge.kernel import BridgeConfig, HookPoint, additive_mask

MaskFn = Callable[[torch.Tensor], torch.Tensor | None]
BiasFn = Callable[[int], torch.Tensor]
RotateFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class AlibiAttention(AttentionWeights, Component):
    """Base of the family's attention components: hook points and the shared hooked computation.

    Weight views (``W_Q``, ``W_O``… in TransformerLens's shapes) come from the fused projection
    ``fused_path`` laid out as ``fused_layout``.

    Subclasses implement ``forward_with_hooks`` with the HF module's own signature: split the fused
    projection into heads, say how the bias and the mask are added, call ``_attend`` and ``_output``,
    and return what the HF module returns.
    """

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, out: str, rotary: bool = False) -> None:
        super().__init__(hf_module)
        self.n_heads = cfg.n_heads
        self.n_kv_heads = cfg.n_key_value_heads or cfg.n_heads
        self.d_head = cfg.d_head
        self.rotary = rotary
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        if rotary:
            self.hook_rot_q = HookPoint()
            self.hook_rot_k = HookPoint()
        else:
            self.hook_alibi = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()
        self.hook_result = HookPoint(opt_in=True)
        object.__setattr__(self, "out_proj", hf_module.get_submodule(out))  # an HF module, not our child
        self.attach(ForwardOverride(hf_module, self.forward_with_hooks, tuple(self.own_hook_points())))

    fused_path: str = "query_key_value"
    fused_layout: FusedLayout = "per_head"

    def forward_with_hooks(self, _original: Callable, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def qkv_weights(self) -> QKVWeights:
        module = self.hf_module.get_submodule(self.fused_path)
        return fused_qkv(module, self.fused_layout, self.n_heads, self.n_kv_heads, self.d_head)

    def output_projection(self) -> nn.Module:
        return self.out_proj

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        scale: float,
        mask: MaskFn,
        bias: BiasFn | None = None,
        rotate: RotateFn | None = None,
        cache: Any = None,
        cache_all_heads: bool = False,
        dropout: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention from per-head ``q`` ``[b, p, h, d]`` and ``k``/``v`` ``[b, p, kv, d]``, firing every hook.

        ``bias(k_len)`` gives the ALiBi bias in scaled-score units, ``mask(scores)`` an additive mask
        (or None). Returns ``z`` ``[b, p, h, d]`` and the pattern ``[b, h, q, k]``.
        """
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        q, k, v = (einops.rearrange(t, "b p h d -> b h p d") for t in (q, k, v))
        if rotate is not None:
            q, k = rotate(q, k)
            q = self.hook_rot_q(q.transpose(1, 2)).transpose(1, 2)
            k = self.hook_rot_k(k.transpose(1, 2)).transpose(1, 2)
        if cache_all_heads and k.shape[1] != self.n_heads:
            k, v = (einops.repeat(t, "b kv p d -> b (kv g) p d", g=self.n_heads // t.shape[1]) for t in (k, v))
        if cache is not None:
            k, v = cache.update(k, v, self.hf_module.layer_idx)
        if k.shape[1] not in (1, self.n_heads):
            k, v = (einops.repeat(t, "b kv p d -> b (kv g) p d", g=self.n_heads // t.shape[1]) for t in (k, v))
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [b, h, q, k]; one kv head broadcasts
        if bias is not None:
            scores = scores + self.hook_alibi(bias(k.shape[-2]))
        additive = mask(scores)
        if additive is not None:
            scores = scores + additive
        scores = self.hook_attn_scores(scores)
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype))
        weights = F.dropout(pattern, p=dropout, training=self.hf_module.training)
        z = self.hook_z(einops.rearrange(torch.matmul(weights, v), "b h p d -> b p h d"))
        return z, pattern

    def _output(self, z: torch.Tensor) -> torch.Tensor:
        """The output projection of ``z`` ``[b, p, h, d]``, split by head while ``hook_result`` is hooked."""
        if not self.hook_result.active:
            return self.out_proj(einops.rearrange(z, "b p h d -> b p (h d)"))
        w = einops.rearrange(weight_in_out(self.out_proj), "(h d) m -> h d m", h=self.n_heads)
        result = self.hook_result(torch.einsum("bphd,hdm->bphm", z, w))  # [b, p, h, d_model]
        out = result.sum(dim=2)
        bias = getattr(self.out_proj, "bias", None)
        return out + bias if bias is not None else out


def _per_head_bias(alibi: torch.Tensor, n_heads: int) -> torch.Tensor:
    """HF's ALiBi tensor (``[b·h, 1, k]``, or already ``[b, h, 1, k]``) as ``[b, h, 1, k]``."""
    if alibi.ndim == 4:
        return alibi
    return einops.rearrange(alibi, "(b h) one k -> b h one k", h=n_heads)


class BloomAttention(AlibiAttention):
    """BLOOM: per-head interleaved ``query_key_value``; ``alibi + q·k/√d``; the residual is added inside."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, out: str = "dense") -> None:
        super().__init__(hf_module, cfg, out)

    def forward_with_hooks(
        self,
        _original: Callable,
        hidden_states: torch.Tensor,
        residual: torch.Tensor,
        alibi: torch.Tensor,
        attention_mask: torch.Tensor | None,
        layer_past: Any = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hf = self.hf_module
        fused = hf.query_key_value(hidden_states)
        q, k, v = einops.rearrange(fused, "b p (h three d) -> three b p h d", three=3, h=self.n_heads)
        z, pattern = self._attend(
            q,
            k,
            v,
            scale=hf.inv_norm_factor,
            bias=lambda _k_len: hf.beta * _per_head_bias(alibi, self.n_heads),
            mask=lambda scores: additive_mask(attention_mask, hf, scores),
            cache=layer_past,
            dropout=hf.attention_dropout.p,
        )
        out = F.dropout(self._output(z), p=hf.hidden_dropout, training=hf.training)
        return residual + out, pattern


class MptAttention(AlibiAttention):
    """MPT: fused ``Wqkv`` (``[q | k | v]``), optional ``clip_qkv``; ``q·k·scale + position_bias``.

    Its weight views are the linear projections: ``clip_qkv`` clamps their outputs afterwards (``qkv_clip``)."""

    fused_path = "Wqkv"

    @property
    def qkv_clip(self) -> float | None:
        return self.hf_module.clip_qkv or None

    fused_layout = "grouped"

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, out: str = "out_proj") -> None:
        super().__init__(hf_module, cfg, out)

    def forward_with_hooks(
        self,
        _original: Callable,
        hidden_states: torch.Tensor,
        position_bias: torch.Tensor | None,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hf = self.hf_module
        fused = hf.Wqkv(hidden_states)
        if hf.clip_qkv:
            fused = fused.clamp(min=-hf.clip_qkv, max=hf.clip_qkv)
        q, k, v = einops.rearrange(fused, "b p (three h d) -> three b p h d", three=3, h=self.n_heads)

        def bias(k_len: int) -> torch.Tensor:  # position_bias [h, 1, max_seq_len]: keep the last k_len keys
            start = max(0, position_bias.shape[-1] - k_len)
            return position_bias[None, :, :, start:]

        z, pattern = self._attend(
            q,
            k,
            v,
            scale=hf.softmax_scale,
            bias=bias if position_bias is not None else None,
            mask=lambda scores: _minimum_where(attention_mask, scores),  # MPT's bool mask: True = masked
            cache=past_key_values,
            dropout=hf.attn_dropout_p,
        )
        return self._output(z), pattern


class FalconAttention(AlibiAttention):
    """Falcon: fused ``query_key_value`` in its three layouts (per-head MHA, multi-query, grouped
    "new decoder architecture"); ALiBi or rotary.

    ALiBi semantics: the bias is added once, ``(q·k + alibi)/√d``, as HF's SDPA path (the default)
    and the original Falcon code do. HF's eager path adds it twice (once explicitly, once folded into
    the mask); the bridge does not follow it.
    """

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, out: str = "dense") -> None:
        super().__init__(hf_module, cfg, out, rotary=not hf_module.config.alibi)
        self.layout = (
            "grouped" if hf_module.new_decoder_architecture else "mqa" if hf_module.multi_query else "per_head"
        )
        self.fused_layout = {"grouped": "kv_groups", "mqa": "grouped", "per_head": "per_head"}[self.layout]

    def split(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``q`` ``[b, p, h, d]`` and ``k``, ``v`` ``[b, p, kv, d]`` from the fused projection output."""
        d = self.d_head
        if self.layout == "per_head":
            q, k, v = einops.rearrange(fused, "b p (h three d) -> three b p h d", three=3, d=d)
            return q, k, v
        if self.layout == "mqa":  # [q_1 … q_h | k | v]
            heads = einops.rearrange(fused, "b p (n d) -> b p n d", d=d)
            return heads[:, :, :-2], heads[:, :, -2:-1], heads[:, :, -1:]
        groups = einops.rearrange(fused, "b p (kv g d) -> b p kv g d", kv=self.n_kv_heads, d=d)
        q = einops.rearrange(groups[:, :, :, :-2], "b p kv g d -> b p (kv g) d")  # per kv group: [q… | k | v]
        return q, groups[:, :, :, -2], groups[:, :, :, -1]

    def forward_with_hooks(
        self,
        _original: Callable,
        hidden_states: torch.Tensor,
        alibi: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None = None,
        layer_past: Any = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hf = self.hf_module
        q, k, v = self.split(hf.query_key_value(hidden_states))
        if alibi is None:
            cos, sin = position_embeddings
            bias = None
            rotate = lambda q, k: apply_rotary_pos_emb(q, k, cos, sin)  # noqa: E731
            mask = lambda scores: additive_mask(attention_mask, hf, scores)  # noqa: E731
        else:
            rotate = None
            bias = lambda _k_len: _per_head_bias(alibi, self.n_heads) / math.sqrt(self.d_head)  # noqa: E731
            # HF folds alibi/√d into its float mask; keep only the masking (below -1, HF's own test)
            masked = None if attention_mask is None else attention_mask < -1
            mask = lambda scores: _minimum_where(masked, scores)  # noqa: E731
        z, pattern = self._attend(
            q,
            k,
            v,
            scale=hf.inv_norm_factor,
            bias=bias,
            rotate=rotate,
            mask=mask,
            cache=layer_past,
            cache_all_heads=self.layout == "grouped",
            dropout=hf.attention_dropout.p,
        )
        return self._output(z), pattern


def _minimum_where(masked: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor | None:
    """An additive mask: the dtype's minimum where ``masked`` is True, 0 elsewhere."""
    if masked is None:
        return None
    zero = torch.zeros((), dtype=scores.dtype, device=scores.device)
    return torch.where(masked, torch.finfo(scores.dtype).min, zero)
