"""Benchmark models for ``make bench`` (random weights; sizes from the bridge-llama issue)."""

from __future__ import annotations

from transformers import CohereConfig, Glm4MoeConfig, Llama4TextConfig, LlamaConfig, PhiConfig


def bench_configs() -> dict[str, object]:
    """Label → HF config, one per layout (random weights): a 6-layer, d_model 384 Llama with GQA (6 query / 2 kv
    heads), vocab 32000, and the family's other layouts at the same width (named in each label)."""
    return {
        "llama (6L, d384, GQA 6/2)": LlamaConfig(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=1024,
            max_position_embeddings=256,
            vocab_size=32000,
            architectures=["LlamaForCausalLM"],
        ),
        "phi (6L, d384, parallel shared LN)": PhiConfig(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            intermediate_size=1536,
            max_position_embeddings=256,
            vocab_size=32000,
            architectures=["PhiForCausalLM"],
        ),
        "cohere (6L, d384, parallel, GQA 6/2)": CohereConfig(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=1024,
            max_position_embeddings=256,
            vocab_size=32000,
            bos_token_id=1,
            eos_token_id=2,
            architectures=["CohereForCausalLM"],
        ),
        "llama4 (4L, d384, 8 experts, MoE every 2nd layer)": Llama4TextConfig(
            num_hidden_layers=4,
            hidden_size=384,
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=64,
            intermediate_size=512,
            intermediate_size_mlp=1024,
            num_local_experts=8,
            num_experts_per_tok=1,
            interleave_moe_layer_step=2,
            attention_chunk_size=128,
            max_position_embeddings=256,
            vocab_size=32000,
            architectures=["Llama4ForCausalLM"],
        ),
        "glm4-moe (4L, d384, 16 experts)": Glm4MoeConfig(
            num_hidden_layers=4,
            hidden_size=384,
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=64,
            intermediate_size=1024,
            moe_intermediate_size=256,
            n_routed_experts=16,
            num_experts_per_tok=2,
            n_shared_experts=1,
            n_group=1,
            topk_group=1,
            first_k_dense_replace=1,
            use_qk_norm=True,
            attention_bias=True,
            max_position_embeddings=256,
            vocab_size=32000,
            architectures=["Glm4MoeForCausalLM"],
        ),
    }
