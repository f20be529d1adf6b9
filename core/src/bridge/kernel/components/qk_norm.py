"""Attention with its own norms on queries and keys (Qwen3, Gemma 3, OLMo-2, Cohere, GLM-4-MoE, Persimmon…)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import einops
import torch
from torch import nn

from bridge.kernel.components.attention import Attention, QKVSource
from bridge.kernel.components.base import OutputTap
from bridge.kernel.config import BridgeConfig
from bridge.kernel.hook_points import HookPoint

#: How a q/k norm module sees its tensor: ``"bphd"`` per head before the transpose (Qwen3),
#: ``"bhpd"`` per head after it (Gemma 3), ``"flat"`` across all heads at once (OLMo-2).
NormLayout = Literal["bphd", "bhpd", "flat"]


def fire_as_bphd(hook: HookPoint, n_heads: int, layout: NormLayout) -> Callable[[torch.Tensor], torch.Tensor]:
    """Fire ``hook`` on a q/k norm output seen as ``[b, p, n_heads, d_head]``, whatever its layout."""

    def fire(x: torch.Tensor) -> torch.Tensor:
        if layout == "bphd":
            return hook(x)
        if layout == "bhpd":
            return hook(x.transpose(1, 2)).transpose(1, 2)
        out = hook(einops.rearrange(x, "b p (n d) -> b p n d", n=n_heads))
        return einops.rearrange(out, "b p n d -> b p (n d)")

    return fire


class QKNormAttention(Attention):
    """Attention with norms on q and k between the projections and RoPE (Qwen3, Gemma 3, OLMo-2).

    Adds ``hook_q_normed`` ``[b, p, n_heads, d_head]`` and ``hook_k_normed`` ``[b, p, n_kv_heads, d_head]``:
    the norm modules' outputs (weight applied), i.e. exactly what RoPE rotates. ``hook_q``/``hook_k`` stay at
    the projections, before the norms. ``q_norm``/``k_norm`` are the norm modules' paths in the HF attention,
    ``norm_layout`` how they see their input (``NormLayout``).
    """

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        qkv: QKVSource,
        out: str,
        rotary: bool = True,
        q_norm: str = "q_norm",
        k_norm: str = "k_norm",
        norm_layout: NormLayout = "bphd",
        **options: Any,
    ) -> None:
        super().__init__(hf_module, cfg, qkv, out, rotary, **options)
        self.hook_q_normed = HookPoint()
        self.hook_k_normed = HookPoint()
        for path, hook, n in (
            (q_norm, self.hook_q_normed, self.n_heads),
            (k_norm, self.hook_k_normed, self.n_kv_heads),
        ):
            self.attach(OutputTap(hf_module.get_submodule(path), fire_as_bphd(hook, n, norm_layout), (hook,)))


__all__ = ["NormLayout", "QKNormAttention", "fire_as_bphd"]
