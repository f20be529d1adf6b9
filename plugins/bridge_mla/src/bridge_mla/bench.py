"""Benchmark configurations for ``make bench``: small, randomly initialised."""

from __future__ import annotations

from transformers import DeepseekV3Config, DeepseekV32Config, GlmMoeDsaConfig


def bench_configs() -> dict[str, object]:
    """Label → HF config (``architectures`` names the model class)."""
    return {
        "deepseek-v3 (6L, d384, 16 experts)": DeepseekV3Config(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            num_key_value_heads=6,
            intermediate_size=1024,
            moe_intermediate_size=256,
            q_lora_rank=192,
            kv_lora_rank=128,
            qk_nope_head_dim=64,
            qk_rope_head_dim=32,
            v_head_dim=64,
            n_routed_experts=16,
            num_experts_per_tok=2,
            n_shared_experts=1,
            n_group=4,
            topk_group=2,
            first_k_dense_replace=1,
            max_position_embeddings=256,
            vocab_size=50304,
            architectures=["DeepseekV3ForCausalLM"],
        ),
        "deepseek-v3.2 (6L, d384, 16 experts, indexer top-64 in every layer)": DeepseekV32Config(
            **_MLA,
            index_topk=64,
            index_n_heads=8,
            index_head_dim=64,
            architectures=["DeepseekV32ForCausalLM"],
        ),
        "glm-moe-dsa (6L, d384, 16 experts, indexer top-64, 2 of 3 layers share)": GlmMoeDsaConfig(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            num_key_value_heads=6,
            intermediate_size=1024,
            moe_intermediate_size=256,
            q_lora_rank=192,
            kv_lora_rank=128,
            qk_nope_head_dim=64,
            qk_rope_head_dim=32,
            v_head_dim=64,
            n_routed_experts=16,
            num_experts_per_tok=2,
            n_shared_experts=1,
            first_k_dense_replace=1,
            index_topk=64,
            index_n_heads=8,
            index_head_dim=64,
            indexer_types=["full", "shared", "shared"] * 2,
            max_position_embeddings=256,
            vocab_size=50304,
            architectures=["GlmMoeDsaForCausalLM"],
        ),
    }


#: The MLA and MoE sizes the DSA bench models share with the DeepSeek-V3 one.
_MLA = {
    "num_hidden_layers": 6,
    "hidden_size": 384,
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
    "intermediate_size": 1024,
    "moe_intermediate_size": 256,
    "q_lora_rank": 192,
    "kv_lora_rank": 128,
    "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 32,
    "v_head_dim": 64,
    "n_routed_experts": 16,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
    "n_group": 4,
    "topk_group": 2,
    "first_k_dense_replace": 1,
    "max_position_embeddings": 256,
    "vocab_size": 50304,
}
