"""Benchmark models for ``make bench`` (random weights; sizes from the bridge-llama issue)."""

from __future__ import annotations

from transformers import CohereConfig, LlamaConfig, PhiConfig


def bench_configs() -> dict[str, object]:
    """Label → HF config: a 6-layer, d_model 384 Llama with GQA (6 query / 2 kv heads), vocab 32000; the same sizes
    with a parallel block on one shared LayerNorm (Phi: partial rotary, GELU MLP; Cohere: RoPE on adjacent pairs,
    gated MLP, logit scale)."""
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
    }
