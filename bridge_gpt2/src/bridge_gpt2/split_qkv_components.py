"""Components of the split-q/k/v adapters (GPT-Neo, OPT, XGLM): attention computed inline by the HF module,
and decoder layers whose MLP is not a module of its own.

GPT-Neo and XGLM compute attention scores inside their attention module (not through ``AttentionInterface``).
While an attention-internal hook (``hook_attn_scores``, ``hook_pattern``, ``hook_z``) is active, that module's
forward is replaced by the same computation around ``Attention.attend_with_hooks``; otherwise HF's own code runs.
"""

from __future__ import annotations

from typing import Any

import einops
import torch
from torch import nn
from torch.nn import functional as F

from bridge.components import Attention, Block, ForwardOverride, PostNormBlock, SequentialBlock, SplitQKV, additive_mask
from bridge.kernel import BridgeConfig, BridgeError

SPLIT = "b p (h d) -> b h p d"
MERGE = "b p h d -> b p (h d)"


class InlineAttention(Attention):
    """An attention layer whose HF module computes attention inline: ``forward_with_hooks`` re-expresses it
    around ``attend_with_hooks`` while an attention-internal hook is active. Subclasses implement it."""

    uses_seam = False

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, qkv: SplitQKV, out: str) -> None:
        super().__init__(hf_module, cfg, qkv=qkv, out=out)
        internal = tuple(getattr(self, name) for name in self.internal_hooks if hasattr(self, name))
        self.attach(ForwardOverride(hf_module, self.forward_with_hooks, internal))

    def forward_with_hooks(self, original: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class GPTNeoAttention(InlineAttention):
    """GPT-Neo's attention (HF path ``attn``, a wrapper around ``attn.attention``): no bias on q/k/v, no score
    scaling (scale 1.0), scores in float32, and on ``local`` layers a causal window of ``window_size`` keys
    (HF's ``bias`` buffer), which shows in ``hook_attn_scores`` as masked entries (the dtype's minimum). Equal to
    HF's eager attention but on query rows whose every key is masked (left padding), which HF spreads over the
    window and this path over all keys, like every other model."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        qkv = SplitQKV("attention.q_proj", "attention.k_proj", "attention.v_proj")
        super().__init__(hf_module, cfg, qkv=qkv, out="attention.out_proj")

    def forward_with_hooks(
        self,
        original: Any,
        hidden_states: torch.Tensor,
        layer_past: Any = None,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.hf_module.attention
        query = einops.rearrange(m.q_proj(hidden_states), SPLIT, h=self.n_heads)  # [b, h, p, d]
        key = einops.rearrange(m.k_proj(hidden_states), SPLIT, h=self.n_heads)
        value = einops.rearrange(m.v_proj(hidden_states), SPLIT, h=self.n_heads)
        if layer_past is not None:
            key, value = layer_past.update(key, value, m.layer_id)
        q_len, k_len = query.shape[-2], key.shape[-2]
        allowed = m.bias[:, :, k_len - q_len : k_len, :k_len]  # [1, 1, q, k]: causal, and the window if local
        scores_like = query.new_empty((1, 1, q_len, k_len), dtype=torch.float32)
        visible = additive_mask(attention_mask, m, scores_like)  # [b, 1, q, k], or None
        if visible is None:
            visible = torch.zeros((), device=query.device)
        mask = torch.where(allowed, visible, torch.finfo(torch.float32).min)  # masked: the dtype's minimum
        z, pattern = self.attend_with_hooks(
            m, query.float(), key.float(), value.float(), mask, scaling=1.0, dropout=m.attn_dropout.p
        )  # z: [b, p, h, d]
        out = m.resid_dropout(m.out_proj(einops.rearrange(z.to(value.dtype), MERGE)))
        return out, pattern


class XGLMAttention(InlineAttention):
    """XGLM's attention (HF path ``self_attn``): the query is scaled by ``d_head ** -0.5`` after ``q_proj``
    (``hook_q`` is before that scale, as everywhere), scores ``q·k`` are masked additively."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module, cfg, qkv=SplitQKV(), out="out_proj")

    def forward_with_hooks(
        self,
        original: Any,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if key_value_states is not None:
            raise BridgeError("XGLM cross-attention (key_value_states) is not supported by bridge's hooked attention")
        m = self.hf_module
        query = einops.rearrange(m.q_proj(hidden_states) * m.scaling, SPLIT, h=self.n_heads)  # [b, h, p, d]
        key = einops.rearrange(m.k_proj(hidden_states), SPLIT, h=self.n_heads)
        value = einops.rearrange(m.v_proj(hidden_states), SPLIT, h=self.n_heads)
        if past_key_values is not None:
            cache = getattr(past_key_values, "self_attention_cache", past_key_values)
            key, value = cache.update(key, value, m.layer_idx)
        z, pattern = self.attend_with_hooks(m, query, key, value, attention_mask, scaling=1.0, dropout=m.dropout)
        return m.out_proj(einops.rearrange(z, MERGE)), pattern  # z: [b, p, h, d]


class GPTNeoBlock(SequentialBlock):
    """GPT-Neo's pre-norm block; the HF block returns ``(hidden, attention weights)``."""

    returns_attention_weights = True


class InlineMLPSublayers(Block):
    """Decoder layers (OPT, XGLM) that apply dropout after attention themselves and compute their MLP from
    their own ``fc1``/``activation_fn``/``fc2`` (the ``mlp`` child is inline: path ``""``)."""

    inline_children = ("mlp",)

    def run_attention(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        layer = self.hf_module
        out, weights = super().run_attention(x, call_kwargs)  # [b, p, d_model]
        return F.dropout(out, p=layer.dropout, training=layer.training), weights

    def run_mlp(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.hf_module
        hidden = layer.activation_fn(layer.fc1(x))  # [b, p, d_mlp]
        hidden = F.dropout(hidden, p=getattr(layer, "activation_dropout", 0.0), training=layer.training)
        return F.dropout(layer.fc2(hidden), p=layer.dropout, training=layer.training)  # [b, p, d_model]


class XGLMBlock(InlineMLPSublayers, SequentialBlock):
    """XGLM: ``mid = pre + attn(ln1(pre))``, ``post = mid + mlp(ln2(mid))``."""


class OPTSublayers(InlineMLPSublayers):
    """OPT's layer runs its MLP and ``final_layer_norm`` on flattened positions ``[b·p, d]``; the wiring is
    switched on whenever one of their hooks is active, so they always see ``[b, p, d]``."""

    wire_for_children = ("ln2",)


class OPTPreNormBlock(OPTSublayers, SequentialBlock):
    """OPT with ``do_layer_norm_before=True``: ``mid = pre + attn(ln1(pre))``, ``post = mid + mlp(ln2(mid))``."""


class OPTPostNormBlock(OPTSublayers, PostNormBlock):
    """OPT with ``do_layer_norm_before=False`` (OPT-350m): ``mid = pre + attn(pre)``,
    ``post = ln1(mid) + mlp(ln1(mid))``, output ``ln2(post)`` (``hook_normalized_resid_post``)."""
