"""DeepSeek's MoE on core's ``MoE`` component: the routers' selection rules and the shared experts' output.

Core's ``MoE`` gives ``mlp.hook_router_logits`` ``[b, p, n_experts]``, ``mlp.hook_expert_indices`` and
``mlp.hook_expert_weights`` ``[b, p, k]`` and the opt-in ``mlp.hook_expert_outputs`` ``[b, p, k, d_model]``.
While the router logits are hooked, the selection is recomputed from them by the functions below, which
reproduce HF's routers exactly. The shared experts are a dense gated MLP child
(``mlp.shared_experts.hook_pre/_pre_linear/_post``) with its output at ``mlp.shared_experts.hook_out``,
so ``hook_mlp_out = hook_expert_outputs.sum(k) + shared_experts.hook_out``.
"""

from __future__ import annotations

import torch
from torch import nn

from bridge.components import MLP, OutputTap, group_limited_mask, sigmoid_group_topk
from bridge.kernel import BridgeConfig, HookPoint


def deepseek_v2_routing(router: nn.Module, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V2: softmax, top-k ("greedy") or top-k within the best groups by their best expert
    ("group_limited_greedy"), times ``routed_scaling_factor``."""
    scores = logits.softmax(dim=-1, dtype=torch.float32)
    if router.topk_method == "group_limited_greedy":
        grouped = scores.unflatten(-1, (router.num_group, -1))  # [N, n_group, experts per group]
        scores = scores.masked_fill(~group_limited_mask(grouped.max(dim=-1).values, router), 0.0)
    weights, indices = torch.topk(scores, k=router.top_k, dim=-1, sorted=False)
    return weights * router.routed_scaling_factor, indices


#: DeepSeek-V3's router: sigmoid, grouped top-k with a correction bias (core's, shared with GLM-4-MoE).
deepseek_v3_routing = sigmoid_group_topk


class SharedExperts(MLP):
    """The always-on shared experts: a gated MLP with its output at ``hook_out`` ``[b, p, d_model]``."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, **paths: str) -> None:
        super().__init__(hf_module, cfg, **paths)
        self.hook_out = HookPoint()
        self.attach(OutputTap(hf_module, self.hook_out, (self.hook_out,)))
