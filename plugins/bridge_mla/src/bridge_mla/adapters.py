"""Adapters of the MLA family. Data only: config normalization and component maps."""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import DeepseekV2Config, DeepseekV3Config

from bridge import Adapter, ComponentMap, Spec
from bridge.components import MLP, MoE, Norm, SequentialBlock
from bridge.kernel import DenseOrMoEBlockSpec
from bridge_mla.attention import MLAAttention, Rotate, rotate_complex, rotate_cos_sin
from bridge_mla.moe import SharedExperts, deepseek_v2_routing, deepseek_v3_routing

TINY_VOCAB = 128  # the vocabulary size of bridge.testing's tiny tokenizer
GATED = {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"}


class DeepseekAdapter(Adapter):
    """Shared by DeepSeek-V2 and V3: MLA attention, RMS norms, dense then MoE MLPs with shared experts."""

    rotate: ClassVar[Rotate]
    routing: ClassVar[Any]

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
                SequentialBlock,
                {
                    "ln1": Spec(Norm, "input_layernorm", {"kind": "RMS"}),
                    "attn": Spec(MLAAttention, "self_attn", {"rotate": type(self).rotate}),
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

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> DeepseekV2Config:
        """MLA without q-LoRA; every layer MoE (2 of 8 experts in the best of 2 groups, 2 shared)."""
        values: dict[str, Any] = dict(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            moe_intermediate_size=16,
            q_lora_rank=None,
            kv_lora_rank=16,
            qk_nope_head_dim=8,
            qk_rope_head_dim=8,
            v_head_dim=16,  # = qk_nope + qk_rope, so the kit's d_head contract holds (tests vary it)
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_shared_experts=2,
            n_group=2,
            topk_group=1,
            topk_method="group_limited_greedy",
            first_k_dense_replace=0,
            max_position_embeddings=64,
            vocab_size=TINY_VOCAB,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            architectures=[architecture or cls.architectures[0]],
        )
        values.update(overrides)
        return DeepseekV2Config(**values)


class DeepseekV3Adapter(DeepseekAdapter):
    """DeepSeek-V3: MLA with q-LoRA, (interleaved) rotary, sigmoid grouped top-k routers, first layers dense."""

    architectures = ("DeepseekV3ForCausalLM",)
    model_types = ("deepseek_v3",)
    rotate = staticmethod(rotate_cos_sin)
    routing = staticmethod(deepseek_v3_routing)

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> DeepseekV3Config:
        """q-LoRA MLA; layer 0 dense, layer 1 MoE (2 of 8 experts in the best of 2 groups, 1 shared)."""
        values: dict[str, Any] = dict(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=4,  # nominal in MLA; HF's eager path divides heads by it (default 128)
            intermediate_size=64,
            moe_intermediate_size=16,
            q_lora_rank=24,
            kv_lora_rank=16,
            qk_nope_head_dim=8,
            qk_rope_head_dim=8,
            v_head_dim=16,  # = qk_nope + qk_rope, so the kit's d_head contract holds (tests vary it)
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_shared_experts=1,
            n_group=2,  # grouped top-k takes the best 2 experts of each group: ≥ 2 experts per group
            topk_group=1,
            first_k_dense_replace=1,
            max_position_embeddings=64,
            vocab_size=TINY_VOCAB,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            architectures=[architecture or cls.architectures[0]],
        )
        values.update(overrides)
        return DeepseekV3Config(**values)


ADAPTERS = (DeepseekV2Adapter, DeepseekV3Adapter)
