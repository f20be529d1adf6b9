"""Benchmark models for ``make bench`` (random weights; sizes from the bridge-llama issue)."""

from __future__ import annotations

from transformers import LlamaConfig, Qwen2MoeConfig


def bench_configs() -> dict[str, object]:
    """Label → HF config: a 6-layer, d_model 384 Llama with GQA (6 query / 2 kv heads), vocab 32000; a Qwen2-MoE
    of the same size (16 experts, 2 per token, a gated shared expert, every other layer dense)."""
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
        "qwen2-moe (6L, d384, 16 experts + shared, half dense)": Qwen2MoeConfig(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=1024,
            moe_intermediate_size=256,
            shared_expert_intermediate_size=512,
            num_experts=16,
            num_experts_per_tok=2,
            decoder_sparse_step=2,
            max_position_embeddings=256,
            vocab_size=32000,
            architectures=["Qwen2MoeForCausalLM"],
        ),
    }
