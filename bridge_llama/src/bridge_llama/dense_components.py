"""Components of the dense Llama-like layouts with small changes: Granite's scaled residual branches, OLMo's
clipped q/k/v. (Granite's scaled embedding is core's ``ScaledEmbedding``, re-exported here.)"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import einops
import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from bridge.components import Attention, Component, ForwardOverride, ScaledEmbedding, SequentialBlock, SplitQKV, heads
from bridge.kernel import BridgeConfig

__all__ = ["ClippedSplitQKV", "ScaledEmbedding", "ScaledResidualBlock"]


class ScaledResidualBlock(SequentialBlock):
    """Pre-norm with scaled residual branches (Granite): ``mid = pre + m·attn(ln1(pre))``,
    ``post = mid + m·mlp(ln2(mid))`` with ``m`` the HF layer's ``residual_multiplier``.

    ``hook_attn_out``/``hook_mlp_out`` ``[b, p, d_model]`` are after the multiplier (what is added to the
    stream), so ``resid_mid = resid_pre + attn_out`` holds as in every block; per-head ``hook_result`` and the
    MLP's ``hook_post`` are before it.
    """

    def __init__(
        self, hf_module: nn.Module, cfg: BridgeConfig, children: dict[str, Component], paths: dict[str, str]
    ) -> None:
        super().__init__(hf_module, cfg, children, paths)
        self.residual_scale = float(hf_module.residual_multiplier)

    def run_attention(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        out, weights = super().run_attention(x, call_kwargs)
        return out * self.residual_scale, weights

    def run_mlp(self, x: torch.Tensor) -> torch.Tensor:
        return super().run_mlp(x) * self.residual_scale


@dataclass(frozen=True)
class ClippedSplitQKV(SplitQKV):
    """Separate q/k/v projections whose outputs HF clamps to ``[-clip, clip]`` (OLMo's ``clip_qkv``).

    ``hook_q/k/v`` are after the clamp (what RoPE and the attention use). HF clamps in place inside its forward,
    so while one of them is hooked the attention's forward is re-expressed (same modules, same order) with the
    hooks after the clamp: a patch there is used as given, not clamped again. With ``clip=None`` this is
    ``SplitQKV``.
    """

    clip: float | None = None

    def attachments(self, attn: Attention, hf_attn: nn.Module) -> list:
        if self.clip is None:
            return super().attachments(attn, hf_attn)
        hooks = (attn.hook_q, attn.hook_k, attn.hook_v)
        return [ForwardOverride(hf_attn, self._forward(attn), hooks)]

    def _forward(self, attn: Attention) -> Callable[..., tuple[torch.Tensor, Any]]:
        clip = float(self.clip)  # type: ignore[arg-type]
        paths = ((self.q, attn.hook_q, attn.n_heads), (self.k, attn.hook_k, attn.n_kv_heads))
        paths += ((self.v, attn.hook_v, attn.n_kv_heads),)

        def forward(
            _original: Callable,
            hidden_states: torch.Tensor,
            position_embeddings: tuple[torch.Tensor, torch.Tensor],
            attention_mask: torch.Tensor | None,
            past_key_values: Any = None,
            **kwargs: Any,
        ) -> tuple[torch.Tensor, Any]:
            m = attn.hf_module
            modeling = sys.modules[type(m).__module__]
            q, k, v = (
                einops.rearrange(  # [b, p, n·d] -> [b, n, p, d]
                    heads(hook, m.get_submodule(path)(hidden_states).clamp(-clip, clip), n),
                    "b p (n d) -> b n p d",
                    n=n,
                )
                for path, hook, n in paths
            )
            cos, sin = position_embeddings
            q, k = modeling.apply_rotary_pos_emb(q, k, cos, sin)
            if past_key_values is not None:
                k, v = past_key_values.update(k, v, m.layer_idx)
            attention = ALL_ATTENTION_FUNCTIONS.get_interface(
                m.config._attn_implementation, modeling.eager_attention_forward
            )
            z, weights = attention(
                m,
                q,
                k,
                v,
                attention_mask,
                dropout=0.0 if not m.training else m.attention_dropout,
                scaling=m.scaling,
                **kwargs,
            )  # z: [b, p, n_heads, d_head]
            return attn.out_proj(einops.rearrange(z, "b p h d -> b p (h d)")), weights

        return forward
