"""Examples of the bridge_mla adapters: tiny configs and inputs for the conformance kit and tests."""

from __future__ import annotations

from typing import Any

from transformers import DeepseekV2Config, DeepseekV3Config, DeepseekV32Config, GlmMoeDsaConfig

from bridge.kernel import TINY_SPECIAL_IDS, TINY_VOCAB, Examples
from bridge_mla.adapters import DeepseekV2Adapter, DeepseekV3Adapter, DeepseekV32Adapter, GlmMoeDsaAdapter


class DeepseekV2Examples(Examples):
    adapter = DeepseekV2Adapter

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
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )
        values.update(overrides)
        return DeepseekV2Config(**values)


class DeepseekV3Examples(Examples):
    adapter = DeepseekV3Adapter

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
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )
        values.update(overrides)
        return DeepseekV3Config(**values)


#: The tiny DSA models: V3's tiny MLA and MoE, and an indexer (8 heads of 16, half of each rotated) keeping 4 keys per
#: query, fewer than the kit's 12 positions, so the sparse selection bites.
TINY_DSA: dict[str, Any] = dict(
    num_hidden_layers=2,
    hidden_size=32,
    num_attention_heads=4,
    num_key_value_heads=4,
    intermediate_size=64,
    moe_intermediate_size=16,
    q_lora_rank=24,
    kv_lora_rank=16,
    qk_nope_head_dim=8,
    qk_rope_head_dim=8,
    v_head_dim=16,  # = qk_nope + qk_rope, so the kit's d_head contract holds
    n_routed_experts=8,
    num_experts_per_tok=2,
    n_shared_experts=1,
    n_group=2,
    topk_group=1,
    first_k_dense_replace=1,
    index_topk=4,
    index_n_heads=8,
    index_head_dim=16,
    max_position_embeddings=64,
    vocab_size=TINY_VOCAB,
    **TINY_SPECIAL_IDS,
    rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
    initializer_range=0.125,  # the kit redraws 2-D linear weights only: give the router and experts the same scale
)

#: DeepSeek-V3.2-Exp's RoPE: YaRN (factor 40, ``mscale_all_dim`` 1, so the score scale grows by mscale²), here from a
#: tiny original context.
V32_YARN = {
    "rope_type": "yarn",
    "rope_theta": 10_000.0,
    "factor": 40.0,
    "original_max_position_embeddings": 4,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
}


class DeepseekV32Examples(Examples):
    adapter = DeepseekV32Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> DeepseekV32Config:
        """DSA with an indexer keeping 4 keys a query; layer 0 dense, layer 1 MoE."""
        values = {**TINY_DSA, "architectures": [architecture or cls.adapter.architectures[0]], **overrides}
        return DeepseekV32Config(**values)

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """DeepSeek-V3.2-Exp's switches: YaRN with mscale and ``v_head_dim`` ≠ ``qk_nope + qk_rope`` (128 vs 192).
        (Its ``index_topk`` of 2048 keeps every key of a shorter prompt; the family's tests run that case, where the
        indexer's hooks cannot matter.)"""
        return {
            "deepseek-v3.2-exp-style": cls.example_config(rope_parameters=V32_YARN, qk_nope_head_dim=16, v_head_dim=8)
        }


class GlmMoeDsaExamples(Examples):
    adapter = GlmMoeDsaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> GlmMoeDsaConfig:
        """GLM-MoE-DSA with three layers: the indexer runs in layers 0 and 2, layer 1 reuses layer 0's top-k."""
        values = {
            **TINY_DSA,
            "num_hidden_layers": 3,
            "indexer_types": ["full", "shared", "full"],
            "architectures": [architecture or cls.adapter.architectures[0]],
            **overrides,
        }
        return GlmMoeDsaConfig(**values)

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """GLM-5's switches: every layer runs its indexer (HF's default schedule), one expert group, untied, and
        ``v_head_dim`` ≠ ``qk_nope + qk_rope`` (256 vs 256 + 64)."""
        glm5 = dict(indexer_types=None, n_group=1, topk_group=1, qk_nope_head_dim=16, v_head_dim=8)
        return {"glm5-style": cls.example_config(**glm5)}


#: The examples of every adapter the family registers.
EXAMPLES = (
    DeepseekV2Examples,
    DeepseekV3Examples,
    DeepseekV32Examples,
    GlmMoeDsaExamples,
)
