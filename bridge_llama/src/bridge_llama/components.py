"""What is special to the RoPE family: norms after sublayers. (Its q/k-norm attention and fused gate/up MLP are
core's ``QKNormAttention`` and ``GateUpMLP``, re-exported here.)"""

from __future__ import annotations

from typing import Any

import torch

from bridge.components import Block, GateUpMLP, NormLayout, QKNormAttention

__all__ = ["GateUpMLP", "NormLayout", "QKNormAttention", "SandwichBlock"]


class SandwichBlock(Block):
    """Norms after each sublayer, and optionally before it (Gemma 2/3: both; OLMo-2: after only).

    ``attn_out = ln1_post(attn(ln1(resid_pre)))``, ``resid_mid = resid_pre + attn_out``,
    ``mlp_out = ln2_post(mlp(ln2(resid_mid)))``, ``resid_post = resid_mid + mlp_out``: ``hook_attn_out`` and
    ``hook_mlp_out`` are what is added to the residual stream, after the post-norms. Children ``ln1``/``ln2``
    are optional (absent for OLMo-2); ``ln1_post``/``ln2_post`` are required.
    """

    block_hooks = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
    algebra = (
        ("hook_resid_mid", ("hook_resid_pre", "hook_attn_out")),
        ("hook_resid_post", ("hook_resid_mid", "hook_mlp_out")),
    )

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> torch.Tensor:
        resid_pre = self.hook_resid_pre(hidden)
        attn, _weights = self.run_attention(self.run_norm("ln1", resid_pre), call_kwargs)
        attn_out = self.hook_attn_out(self.run_norm("ln1_post", attn))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.run_norm("ln2_post", self.run_mlp(self.run_norm("ln2", resid_mid))))
        return self.hook_resid_post(resid_mid + mlp_out)
