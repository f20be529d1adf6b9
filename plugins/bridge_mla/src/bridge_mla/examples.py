"""Examples of the bridge_mla adapters: tiny configs and inputs for the conformance kit and tests."""

from __future__ import annotations

from typing import Any

from transformers import DeepseekV2Config, DeepseekV3Config

from bridge.kernel import TINY_SPECIAL_IDS, TINY_VOCAB, Examples
from bridge_mla.adapters import DeepseekV2Adapter, DeepseekV3Adapter


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


#: The examples of every adapter the family registers.
EXAMPLES = (
    DeepseekV2Examples,
    DeepseekV3Examples,
)
