"""The gated full attention of Qwen3-Next and Qwen3.5: core's attention with an output gate per head.

HF's ``q_proj`` gives each head ``[query | gate]`` (``2 · d_head`` columns); the attention's output ``z`` is
multiplied by ``sigmoid(gate)`` before ``o_proj``. The query half is ``hook_q`` as in every attention; the gate's
logits get ``attn.hook_gate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import torch
from torch import nn

from bridge.components import Attention, OutputTap, QKVWeights, SplitQKV, linear_bias, linear_in_out, separate_qkv
from bridge.kernel import HookPoint


@dataclass(frozen=True)
class GatedQuery(SplitQKV):
    """Separate q, k, v projections whose ``q`` holds, per head, the query and then an output gate.

    Gives the attention ``hook_gate`` ``[b, p, n_heads, d_head]``: the gate's logits, before the sigmoid
    (the layer's output is ``o_proj(z · sigmoid(hook_gate))``); ``hook_q`` sees the query half only."""

    def attachments(self, attn: Attention, hf_attn: nn.Module) -> list:
        attn.hook_gate = HookPoint()
        attn.z_feeds_out_proj = False  # o_proj reads z · sigmoid(gate)
        _, *others = super().attachments(attn, hf_attn)
        hooks = (attn.hook_q, attn.hook_gate)
        return [OutputTap(hf_attn.get_submodule(self.q), lambda x: self.split_fire(attn, x), hooks), *others]

    def split_fire(self, attn: Attention, x: torch.Tensor) -> torch.Tensor:
        pair = einops.rearrange(x, "b p (h two d) -> two b p h d", two=2, h=attn.n_heads)
        query, gate = attn.hook_q(pair[0]), attn.hook_gate(pair[1])  # [b, p, h, d] each
        return einops.rearrange(torch.stack([query, gate]), "two b p h d -> b p (h two d)")

    def weights(self, attn: Attention) -> QKVWeights:
        get = attn.hf.get_submodule
        plain = separate_qkv(get(self.k), get(self.k), get(self.v), attn.d_head)
        q_proj = get(self.q)
        W_Q = einops.rearrange(linear_in_out(q_proj), "m (h two d) -> two h m d", two=2, d=attn.d_head)[0]
        bias = linear_bias(q_proj)
        b_Q = None if bias is None else einops.rearrange(bias, "(h two d) -> two h d", two=2, d=attn.d_head)[0]
        return plain._replace(W_Q=W_Q, b_Q=b_Q)

    def projection_layout(self, attn: Attention):
        """Head ``h``'s query and gate columns both read head ``h``'s query input (``hook_q_input``)."""
        layout = super().projection_layout(attn)
        d = attn.d_head
        layout[self.q] = [("q", i, slice(2 * i * d, 2 * (i + 1) * d)) for i in range(attn.n_heads)]
        return layout
