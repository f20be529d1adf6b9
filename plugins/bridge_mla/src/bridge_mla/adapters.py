"""Adapters of the MLA family. Data only: config normalization and component maps."""

from __future__ import annotations

from typing import Any, ClassVar

from bridge import Adapter, ComponentMap, Spec
from bridge.components import MLP, MoE, Norm, SequentialBlock
from bridge.kernel import DenseOrMoEBlockSpec
from bridge_mla.attention import MLAAttention, Rotate, rotate_complex, rotate_cos_sin
from bridge_mla.dsa import (
    DSAAttention,
    TopkPassingBlock,
    index_rotate_halves,
    index_rotate_interleaved,
    rotate_interleaved,
)
from bridge_mla.moe import SharedExperts, deepseek_v2_routing, deepseek_v3_routing

GATED = {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"}


class DeepseekAdapter(Adapter):
    """Shared by DeepSeek-V2 and V3: MLA attention, RMS norms, dense then MoE MLPs with shared experts."""

    rotate: ClassVar[Rotate]
    routing: ClassVar[Any]
    wiring: ClassVar[type] = SequentialBlock

    def attention(self) -> Spec:
        """The ``attn`` child of every block."""
        return Spec(MLAAttention, "self_attn", {"rotate": type(self).rotate})

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            "n_key_value_heads": c.num_attention_heads,  # per-head keys and values come out of kv_b_proj
            "d_head": c.qk_nope_head_dim + c.qk_rope_head_dim,  # q, k, rot_q, rot_k, scores
            "d_head_v": c.v_head_dim,  # v, z
            "d_mlp": c.intermediate_size,  # dense layers
            "positional_embedding_type": "rotary",
            "rotary_dim": c.qk_rope_head_dim,
            "normalization_type": "RMS",
            "gated_mlp": True,  # dense MLPs and experts alike are SiLU-gated
            "extra": {
                "qk_nope_head_dim": c.qk_nope_head_dim,
                "qk_rope_head_dim": c.qk_rope_head_dim,
                "q_lora_rank": c.q_lora_rank,
                "kv_lora_rank": c.kv_lora_rank,
                "n_experts": c.n_routed_experts,
                "experts_per_token": c.num_experts_per_tok,
                "n_shared_experts": c.n_shared_experts,
                "d_mlp_expert": c.moe_intermediate_size,
                "first_k_dense_replace": c.first_k_dense_replace,
            },
        }

    def component_map(self, cfg) -> ComponentMap:
        shared = Spec(SharedExperts, "shared_experts", GATED)
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=DenseOrMoEBlockSpec(
                type(self).wiring,
                {
                    "ln1": Spec(Norm, "input_layernorm", {"kind": "RMS"}),
                    "attn": self.attention(),
                    "ln2": Spec(Norm, "post_attention_layernorm", {"kind": "RMS"}),
                    "mlp": Spec(MLP, "mlp", GATED),
                },
                moe_mlp=Spec(MoE, "mlp", {"routing": type(self).routing, "shared": shared}),
            ),
            ln_final=Spec(Norm, "norm", {"kind": "RMS"}),
        )


class DeepseekV2Adapter(DeepseekAdapter):
    """DeepSeek-V2: MLA (optionally without q-LoRA), complex-frequency rotary, softmax routers."""

    architectures = ("DeepseekV2ForCausalLM",)
    model_types = ("deepseek_v2",)
    rotate = staticmethod(rotate_complex)
    routing = staticmethod(deepseek_v2_routing)


class DeepseekV3Adapter(DeepseekAdapter):
    """DeepSeek-V3: MLA with q-LoRA, (interleaved) rotary, sigmoid grouped top-k routers, first layers dense."""

    architectures = ("DeepseekV3ForCausalLM",)
    model_types = ("deepseek_v3",)
    rotate = staticmethod(rotate_cos_sin)
    routing = staticmethod(deepseek_v3_routing)


class DeepseekV32Adapter(DeepseekAdapter):
    """DeepSeek-V3.2: DeepSeek-V3 (interleaved rotary, sigmoid grouped routers, first layers dense) with DeepSeek
    Sparse Attention: every layer's indexer picks ``index_topk`` keys per query (``attn.hook_index_scores``,
    ``attn.hook_topk_indices``); its own RoPE pairs halves."""

    architectures = ("DeepseekV32ForCausalLM",)
    model_types = ("deepseek_v32",)
    rotate = staticmethod(rotate_interleaved)
    routing = staticmethod(deepseek_v3_routing)
    index_rotate: ClassVar[Any] = staticmethod(index_rotate_halves)

    def attention(self) -> Spec:
        return Spec(DSAAttention, "self_attn", {"rotate": type(self).rotate, "index_rotate": type(self).index_rotate})

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        out = super().config_overrides()
        out["extra"] |= {
            "index_topk": c.index_topk,
            "index_n_heads": c.index_n_heads,
            "index_head_dim": c.index_head_dim,
            "mlp_layer_types": list(c.mlp_layer_types),
        }
        return out


class GlmMoeDsaAdapter(DeepseekV32Adapter):
    """GLM-MoE-DSA (GLM-5): DeepSeek-V3.2's layout with an interleaved-RoPE indexer that runs only in ``"full"``
    layers (``indexer_types``); ``"shared"`` layers reuse the previous layer's top-k (``attn.hook_topk_indices``
    fires there on the reused choice, and they have no ``hook_index_scores``)."""

    architectures = ("GlmMoeDsaForCausalLM",)
    model_types = ("glm_moe_dsa",)
    index_rotate = staticmethod(index_rotate_interleaved)
    wiring = TopkPassingBlock

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["extra"]["indexer_types"] = list(self.hf_config.indexer_types)
        return out


ADAPTERS = (DeepseekV2Adapter, DeepseekV3Adapter, DeepseekV32Adapter, GlmMoeDsaAdapter)
