"""GLM-4-MoE (GLM-4.5, GLM-4.5-Air): the Llama layout with partial rotary, optional q/k norms, and DeepSeek-V3's
router on core's MoE component. Data only.

The first ``first_k_dense_replace`` layers have a dense gated MLP (``mlp.hook_pre``…); the others core's ``MoE``
(``mlp.hook_router_logits``, ``hook_expert_indices``, ``hook_expert_weights``, opt-in ``hook_expert_outputs``)
with core's grouped sigmoid routing and the shared experts as ``mlp.shared_expert`` (+ ``hook_shared_expert_out``).
"""

from __future__ import annotations

from typing import Any

from bridge import ComponentMap, Spec
from bridge.components import MLP, Attention, MoE, Norm, QKNormAttention, SequentialBlock, sigmoid_group_topk
from bridge.kernel import BridgeConfig, DenseOrMoEBlockSpec
from bridge_llama.adapters import LLAMA_ATTN, LLAMA_MLP, RMS, RopeAdapter

#: The MoE layers of GLM-4-MoE: HF's ``gate`` router, ``experts`` and ``shared_experts`` (one gated MLP).
GLM4_MOE = {"routing": sigmoid_group_topk, "router": "gate", "experts": "experts", "shared_expert": "shared_experts"}


class Glm4MoeAdapter(RopeAdapter):
    """GLM-4-MoE: partial rotary (half the head by default), q/k/v biases, optional per-head q/k RMS norms
    (``use_qk_norm``: ``hook_q_normed``/``hook_k_normed``), dense then MoE layers (``first_k_dense_replace``),
    a sigmoid router with ``e_score_correction_bias``, group-limited top-k and ``routed_scaling_factor``,
    and shared experts."""

    architectures = ("Glm4MoeForCausalLM",)
    model_types = ("glm4_moe",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        out = super().config_overrides()
        out["gated_mlp"] = True  # dense MLPs, experts and shared experts are SiLU-gated
        out["extra"] |= {
            "n_experts": c.n_routed_experts,
            "experts_per_token": c.num_experts_per_tok,
            "n_shared_experts": c.n_shared_experts,
            "d_mlp_expert": c.moe_intermediate_size,
            "first_k_dense_replace": c.first_k_dense_replace,
            "routed_scaling_factor": c.routed_scaling_factor,
            "n_group": c.n_group,
            "topk_group": c.topk_group,
            "use_qk_norm": c.use_qk_norm,
        }
        return out

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        if self.hf_config.use_qk_norm:
            attention = Spec(QKNormAttention, "self_attn", {**LLAMA_ATTN, "norm_layout": "bphd"})
        else:
            attention = Spec(Attention, "self_attn", LLAMA_ATTN)
        children = {
            "ln1": Spec(Norm, "input_layernorm", RMS),
            "attn": attention,
            "ln2": Spec(Norm, "post_attention_layernorm", RMS),
            "mlp": Spec(MLP, "mlp", LLAMA_MLP),
        }
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=DenseOrMoEBlockSpec(SequentialBlock, children, moe_mlp=Spec(MoE, "mlp", GLM4_MOE)),
            ln_final=Spec(Norm, "norm", RMS),
        )
