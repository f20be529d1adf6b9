"""Benchmark models for ``make bench`` (random weights; sizes from the bridge-llama issue)."""

from __future__ import annotations

from transformers import GraniteConfig, LlamaConfig, OlmoConfig, Starcoder2Config


def bench_configs() -> dict[str, object]:
    """Label → HF config: a 6-layer, d_model 384 Llama with GQA (6 query / 2 kv heads), vocab 32000; and the
    same size for each new block layout (Granite's scaled residual branches, OLMo's non-parametric norms with
    clipped q/k/v, StarCoder2's biased layer norms and plain MLP)."""
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
        "granite (6L, d384, GQA 6/2)": GraniteConfig(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=1024,
            max_position_embeddings=256,
            vocab_size=32000,
            embedding_multiplier=12.0,
            residual_multiplier=0.22,
            attention_multiplier=0.015625,
            logits_scaling=8.0,
            architectures=["GraniteForCausalLM"],
        ),
        "olmo (6L, d384, clip_qkv)": OlmoConfig(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            intermediate_size=1024,
            max_position_embeddings=256,
            vocab_size=32000,
            clip_qkv=8.0,
            pad_token_id=0,
            eos_token_id=0,
            architectures=["OlmoForCausalLM"],
        ),
        "starcoder2 (6L, d384, GQA 6/2)": Starcoder2Config(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=1536,
            max_position_embeddings=256,
            vocab_size=32000,
            sliding_window=128,
            bos_token_id=0,
            eos_token_id=0,
            architectures=["Starcoder2ForCausalLM"],
        ),
    }
