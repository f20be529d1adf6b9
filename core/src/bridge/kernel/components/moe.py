"""Sparse mixture-of-experts MLPs: a router picks ``k`` experts per token, whose weighted outputs are summed.

Written for ``transformers``' MoE layout (Mixtral, Qwen-MoE, DeepSeek-V2/V3…): a block module holding a
*router* that returns ``(logits [N, n_experts], weights [N, k], indices [N, k])`` for the ``N = b·p``
flattened tokens, and an *experts* module called as ``experts(hidden [N, d], indices, weights)``.

Hook points (shapes batch first):

- ``hook_router_logits`` ``[b, p, n_experts]``: the router's logits. When a hook patches them, the selection is
  recomputed from the patched logits by the adapter's ``routing`` function, so a patch here changes which experts
  run and gradients flow through it; a hook that only observes leaves HF's own selection (a router that samples in
  training mode, PhiMoE's, draws once, as in HF);
- ``hook_expert_indices`` ``[b, p, k]`` (integer) and ``hook_expert_weights`` ``[b, p, k]``: the selected
  experts and their weights, in the router's slot order; a patch changes what the experts module receives;
- ``hook_expert_outputs`` ``[b, p, k, d_model]`` (opt-in): the output of the expert in each slot, already
  multiplied by its weight; their sum over ``k`` is the routed output. Computed by calling the HF experts
  module once per slot (same total work, HF's own expert code), so it costs only while enabled.

``hook_mlp_out`` stays on the block, as for dense MLPs. Optional shared experts (DeepSeek) are a dense
``MLP`` child built from a ``Spec``: ``mlp.shared_experts.hook_pre`` etc.

An always-on *shared expert* beside the routed ones (Qwen2-MoE, Llama 4, GLM-4-MoE), given as
``shared_expert="<HF path>"`` (a gated MLP with ``gate_proj``/``up_proj``/``down_proj`` unless
``shared_expert_paths`` says otherwise) and, where HF scales it by a sigmoid gate, ``shared_expert_gate="<HF path>"``:

- ``mlp.shared_expert.hook_pre``/``hook_pre_linear``/``hook_post`` ``[b, p, d_shared]``: a core ``MLP`` child;
- ``hook_shared_expert_out`` ``[b, p, d_model]``: the shared expert's contribution, after its gate, i.e. what HF
  adds to the routed sum (``hook_mlp_out = routed sum + hook_shared_expert_out``).

While one of these is active the block's forward runs the shared expert (and gate) itself on ``[b, p, d]``,
then HF's own forward with the shared expert answering zeros, and adds the two: bit-for-bit HF's sum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import einops
import torch
from torch import nn

from bridge.kernel.components.base import Component, ForwardOverride, InputTap, OutputTap
from bridge.kernel.components.mlp import MLP
from bridge.kernel.components.weight_views import MoEWeights
from bridge.kernel.config import BridgeConfig
from bridge.kernel.hook_points import HookPoint

if TYPE_CHECKING:
    from bridge.kernel.adapter import Spec

#: ``routing(router_module, logits [N, n_experts]) -> (weights [N, k], indices [N, k])``: the router's own
#: selection rule, applied to given logits. It must reproduce the HF router exactly on unpatched logits.
Routing = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def softmax_then_topk(normalize: bool = True) -> Routing:
    """Mixtral-style routing: a softmax over every expert (in float32), then the top ``router.top_k`` of the
    probabilities, optionally renormalized."""

    def route(router: nn.Module, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(logits.float(), dim=-1)
        weights, indices = torch.topk(probs, router.top_k, dim=-1)
        if normalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights, indices

    return route


def group_limited_mask(group_scores: torch.Tensor, router: nn.Module) -> torch.Tensor:
    """``[N, n_experts]`` bool: the experts of each token's ``router.topk_group`` best groups, from the groups'
    scores ``[N, router.num_group]`` (experts are grouped in order, ``num_experts // num_group`` a group)."""
    group_idx = torch.topk(group_scores, k=router.topk_group, dim=-1, sorted=False)[1]
    groups = torch.zeros_like(group_scores).scatter_(1, group_idx, 1).bool()  # [N, n_group]
    return groups.repeat_interleave(router.num_experts // router.num_group, dim=-1)


def sigmoid_group_topk(router: nn.Module, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V3's routing (also GLM-4-MoE's): sigmoid scores; experts chosen by score +
    ``e_score_correction_bias`` among the ``topk_group`` groups with the best two-expert sums; weights are the
    scores (the bias only chooses), optionally normalised (``norm_topk_prob``), times ``routed_scaling_factor``."""
    scores = logits.sigmoid()
    choice = scores + router.e_score_correction_bias
    group_scores = choice.unflatten(-1, (router.num_group, -1)).topk(2, dim=-1)[0].sum(dim=-1)  # [N, n_group]
    choice = choice.masked_fill(~group_limited_mask(group_scores, router), float("-inf"))
    indices = torch.topk(choice, k=router.top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, indices)
    if router.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * router.routed_scaling_factor, indices


def topk_then_softmax(in_float32: bool = True) -> Routing:
    """Top ``router.top_k`` of the logits (any router bias included), then a softmax over the selected logits
    only: in float32 (Granite-MoE) or, with ``in_float32=False``, in the logits' dtype (GPT-OSS)."""

    def route(router: nn.Module, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top, indices = torch.topk(logits.float() if in_float32 else logits, router.top_k, dim=-1)
        return torch.softmax(top, dim=-1, dtype=top.dtype), indices

    return route


#: The names these routings had before they said their order (kept so old imports work).
softmax_topk = softmax_then_topk
topk_softmax = topk_then_softmax

#: The HF module names of a gated shared expert (Qwen2-MoE's, Llama 4's, GLM-4-MoE's).
GATED_SHARED_EXPERT = {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"}


class MoE(MoEWeights, Component):
    """A sparse MoE MLP block: routing hooks on the router, per-slot expert outputs on the experts module."""

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        routing: Routing,
        router: str = "gate",
        experts: str = "experts",
        shared: Spec | None = None,
        shared_expert: str | None = None,
        shared_expert_gate: str | None = None,
        shared_expert_paths: dict[str, str] | None = None,
    ) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "router", hf_module.get_submodule(router))
        object.__setattr__(self, "experts", hf_module.get_submodule(experts))
        self.routing = routing
        self._lead: tuple[int, ...] = ()
        self.hook_router_logits = HookPoint()
        self.hook_expert_indices = HookPoint()
        self.hook_expert_weights = HookPoint()
        self.hook_expert_outputs = HookPoint(opt_in=True)
        if shared is not None:
            self.shared_experts = shared.build(hf_module, cfg)
        if shared_expert is not None:
            self._add_shared_expert(hf_module, cfg, shared_expert, shared_expert_gate, shared_expert_paths)
        routing_hooks = (self.hook_router_logits, self.hook_expert_indices, self.hook_expert_weights)
        all_hooks = (*routing_hooks, self.hook_expert_outputs)
        self.attach(InputTap(hf_module, self._record_shape, all_hooks))
        self.attach(OutputTap(self.router, self._route, routing_hooks))
        self.attach(
            ForwardOverride(
                self.experts,
                self._per_slot_outputs,
                (self.hook_expert_outputs,),
                when=lambda: self.hook_expert_outputs.enabled,
            )
        )

    def _add_shared_expert(
        self, hf_module: nn.Module, cfg: BridgeConfig, path: str, gate: str | None, paths: dict[str, str] | None
    ) -> None:
        shared_module = hf_module.get_submodule(path)
        object.__setattr__(self, "shared_gate", hf_module.get_submodule(gate) if gate is not None else None)
        self.shared_expert = MLP(shared_module, cfg, **(paths or GATED_SHARED_EXPERT))
        self.hook_shared_expert_out = HookPoint()
        self._shared_silenced = False
        hooks = (self.hook_shared_expert_out, *(m for m in self.shared_expert.modules() if isinstance(m, HookPoint)))
        self.attach(ForwardOverride(hf_module, self._with_shared_expert, hooks))
        self.attach(ForwardOverride(shared_module, self._silenceable, hooks))

    def _silenceable(self, original: Callable, hidden: torch.Tensor) -> torch.Tensor:
        """The shared expert's forward: zeros ``[…, d_model]`` while HF's block runs under ``_with_shared_expert``."""
        return torch.zeros_like(hidden) if self._shared_silenced else original(hidden)

    def _with_shared_expert(self, original: Callable, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """The block's forward with the shared expert run here on ``hidden`` ``[b, p, d]`` (hooks with TL shapes),
        HF's forward (routed experts, silenced shared expert), and the hooked contribution added."""
        shared = self.shared_expert.hf(hidden)  # [b, p, d]
        if self.shared_gate is not None:
            shared = torch.sigmoid(self.shared_gate(hidden)) * shared  # [b, p, 1] * [b, p, d]
        shared = self.hook_shared_expert_out(shared)
        self._shared_silenced = True
        try:
            out = original(hidden, *args, **kwargs)
        finally:
            self._shared_silenced = False
        routed = out[0] if isinstance(out, tuple) else out
        total = routed + shared.reshape(routed.shape)
        return (total, *out[1:]) if isinstance(out, tuple) else total

    def _record_shape(self, hidden: torch.Tensor) -> torch.Tensor:
        """The block's input ``[b, p, d]``: remember ``(b, p)`` to unflatten the router's ``[b·p, …]``."""
        self._lead = tuple(hidden.shape[:-1])
        return hidden

    def _unflatten(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*self._lead, *x.shape[1:])  # [b·p, …] -> [b, p, …]

    def _route(self, out: Any) -> Any:
        logits, weights, indices = out
        if self.hook_router_logits.active:
            seen = self._unflatten(logits)  # [b, p, n_experts]
            version = seen._version
            hooked = self.hook_router_logits(seen)
            if hooked is not seen or seen._version != version:  # patched: route the patched logits
                logits = hooked.reshape(-1, hooked.shape[-1]).to(logits.dtype)
                routed_dtype = weights.dtype
                weights, indices = self.routing(self.router, logits)
                weights = weights.to(routed_dtype)  # the dtype HF's router hands its experts
            # else observed only: HF's own selection stands (a router that samples in training mode draws once)
        weights = self.hook_expert_weights(self._unflatten(weights)).flatten(0, -2)  # [b·p, k]
        indices = self.hook_expert_indices(self._unflatten(indices)).flatten(0, -2)
        return (logits, weights, indices, *out[3:])

    def _per_slot_outputs(
        self, original: Callable, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """Run the HF experts once per slot (``k = 1`` each) and fire ``hook_expert_outputs`` on the stack."""
        k = top_k_index.shape[-1]
        slots = [original(hidden, top_k_index[:, j : j + 1], top_k_weights[:, j : j + 1]) for j in range(k)]
        per_slot = einops.rearrange(slots, "k n d -> n k d")  # [b·p, k, d]
        per_slot = self.hook_expert_outputs(self._unflatten(per_slot))  # [b, p, k, d]
        return per_slot.sum(dim=-2).reshape(hidden.shape).to(hidden.dtype)
