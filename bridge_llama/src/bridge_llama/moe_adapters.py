"""Sparse mixture-of-experts models of the RoPE family, on core's ``MoE`` component. Data only.

Each MLP is an HF MoE block ``(router, experts)``; core's ``MoE`` gives it ``mlp.hook_router_logits``
``[b, p, n_experts]``, ``mlp.hook_expert_indices`` / ``mlp.hook_expert_weights`` ``[b, p, k]`` and the opt-in
``mlp.hook_expert_outputs`` ``[b, p, k, d_model]``, as for Mixtral. What differs per architecture:

- the routing rule, reproduced here so a patch at ``hook_router_logits`` re-routes exactly as HF would;
- Qwen2-MoE's shared expert (``mlp.shared_expert.hook_pre``/``hook_pre_linear``/``hook_post``, and
  ``mlp.hook_shared_expert_out``: its contribution after the sigmoid gate);
- dense layers among the sparse ones (Qwen2/3-MoE's ``decoder_sparse_step`` and ``mlp_only_layers``): those
  layers get the plain ``MLP`` component, chosen per layer from the HF module;
- Granite-MoE's multipliers (``ScaledResidualBlock``), OLMoE's and Qwen3-MoE's q/k norms, PhiMoE's LayerNorms.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.models.phimoe.modeling_phimoe import sparsemixer

from bridge import ComponentMap, Spec
from bridge.components import MoE, QKNormAttention, Routing, softmax_then_topk, topk_then_softmax
from bridge.kernel import BridgeConfig, ComponentMapError, DenseOrMoEBlockSpec
from bridge_llama.adapters import LLAMA_ATTN, RopeAdapter
from bridge_llama.dense_adapters import GraniteScalars
from bridge_llama.dense_components import ScaledResidualBlock


def sparsemixer_routing(router: nn.Module, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PhiMoE's routing: HF's own ``sparsemixer`` (two experts chosen one after the other, each weighted by a
    softmax over the logits within a relative ``2 · router_jitter_noise`` of the best remaining one), as the router
    runs it (sampling in training mode)."""
    return sparsemixer(logits, jitter_eps=router.router_jitter_noise, training=router.training, top_k=router.top_k)


class RopeMoEAdapter(RopeAdapter):
    """The Llama layout with a sparse MoE block as MLP (dense layers where HF builds them)."""

    #: the MoE block's path in the layer, and its router's and experts' paths in the block
    moe_path: ClassVar[str] = "mlp"
    router: ClassVar[str] = "gate"
    #: the config field counting the routed experts
    n_experts_field: ClassVar[str] = "num_experts"
    #: the config field of one expert's hidden size (``intermediate_size`` where experts and dense MLPs agree)
    expert_size_field: ClassVar[str] = "moe_intermediate_size"

    def routing(self) -> Routing:
        """The router's selection rule (default: softmax, top k, renormalized if ``norm_topk_prob``)."""
        return softmax_then_topk(normalize=bool(getattr(self.hf_config, "norm_topk_prob", False)))

    def moe_options(self) -> dict[str, Any]:
        """The options of core's ``MoE`` for this architecture's sparse blocks (routing rule, router, experts…)."""
        return {"routing": self.routing(), "router": self.router, "experts": "experts"}

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        out = super().config_overrides()
        out["gated_mlp"] = True  # dense MLPs, experts and shared experts alike are SiLU-gated
        out["extra"] |= {
            "n_experts": getattr(c, self.n_experts_field),
            "experts_per_token": c.num_experts_per_tok,
            "d_mlp_expert": getattr(c, self.expert_size_field),
        }
        return out

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        base = super().component_map(cfg)
        children = {**base.block.children, "mlp": replace(base.block.children["mlp"], path=self.moe_path)}
        block = DenseOrMoEBlockSpec(
            base.block.kind, children, base.block.extra_paths, moe_mlp=Spec(MoE, self.moe_path, self.moe_options())
        )
        return replace(base, block=block)


class OlmoeAdapter(RopeMoEAdapter):
    """OLMoE: OLMo-2's q/k norms across all heads, in a pre-norm Llama block; softmax top-k routing without
    renormalization (``norm_topk_prob`` False in the published checkpoints)."""

    architectures = ("OlmoeForCausalLM",)
    model_types = ("olmoe",)
    attention = (QKNormAttention, {**LLAMA_ATTN, "norm_layout": "flat"})
    expert_size_field = "intermediate_size"

    def config_overrides(self) -> dict[str, Any]:
        if getattr(self.hf_config, "clip_qkv", None) is not None:
            raise ComponentMapError(
                f"OLMoE with clip_qkv={self.hf_config.clip_qkv}: HF clamps q, k and v in place after the hook points "
                "(so hook_q_normed, hook_k_normed and hook_v would show unclamped values and patches there would be "
                "clamped). bridge supports clip_qkv=None only, as in the published OLMoE checkpoints."
            )
        return super().config_overrides()


class Qwen2MoeAdapter(RopeMoEAdapter):
    """Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): Qwen2 attention; routed experts plus one shared expert scaled by
    a sigmoid gate (``mlp.shared_expert.*``, ``mlp.hook_shared_expert_out``); dense layers per
    ``decoder_sparse_step``/``mlp_only_layers``."""

    architectures = ("Qwen2MoeForCausalLM",)
    model_types = ("qwen2_moe",)

    def moe_options(self) -> dict[str, Any]:
        return {**super().moe_options(), "shared_expert": "shared_expert", "shared_expert_gate": "shared_expert_gate"}

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["extra"]["d_mlp_shared_expert"] = self.hf_config.shared_expert_intermediate_size
        return out


class Qwen3MoeAdapter(RopeMoEAdapter):
    """Qwen3-MoE: Qwen3's per-head q/k norms; softmax top-k routing, renormalized (``norm_topk_prob`` True in the
    published checkpoints); no shared expert; dense layers per ``decoder_sparse_step``/``mlp_only_layers``."""

    architectures = ("Qwen3MoeForCausalLM",)
    model_types = ("qwen3_moe",)
    attention = (QKNormAttention, {**LLAMA_ATTN, "norm_layout": "bphd"})


class PhimoeAdapter(RopeMoEAdapter):
    """PhiMoE (Phi-3.5-MoE): LayerNorms, biased attention projections and LM head, LongRoPE; routing by
    ``sparsemixer`` (HF's own function, so a patch at ``hook_router_logits`` re-routes exactly as HF does)."""

    architectures = ("PhimoeForCausalLM",)
    model_types = ("phimoe",)
    norm: ClassVar[dict[str, Any]] = {"kind": "LN"}
    router = "router"
    n_experts_field = "num_local_experts"
    expert_size_field = "intermediate_size"

    def routing(self) -> Routing:
        return sparsemixer_routing

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["normalization_type"] = "LN"
        out["extra"]["experts_per_token"] = 2  # sparsemixer picks two, whatever num_experts_per_tok says
        return out


class GraniteMoeAdapter(GraniteScalars, RopeMoEAdapter):
    """Granite-MoE (granite-3.0-1b/3b-a…-moe, PowerMoE): Granite's multipliers around a Mixtral-like MoE whose
    router picks the top-k logits and softmaxes over them; Granite's multipliers placed as in ``GraniteAdapter``:
    ``hook_embed`` is after ``embedding_multiplier``, ``hook_attn_out``/``hook_mlp_out`` after ``residual_multiplier``
    (what is added), ``attention_multiplier`` is the score scale and ``W_U``/``b_U`` include ``1 / logits_scaling``."""

    architectures = ("GraniteMoeForCausalLM",)
    model_types = ("granitemoe",)
    wiring = ScaledResidualBlock
    moe_path = "block_sparse_moe"
    router = "router"
    n_experts_field = "num_local_experts"
    expert_size_field = "intermediate_size"

    def routing(self) -> Routing:
        return topk_then_softmax()


MOE_ADAPTERS: tuple[type[RopeMoEAdapter], ...] = (
    OlmoeAdapter,
    Qwen2MoeAdapter,
    Qwen3MoeAdapter,
    PhimoeAdapter,
    GraniteMoeAdapter,
)
