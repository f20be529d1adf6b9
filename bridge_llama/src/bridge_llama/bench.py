"""Benchmark models for ``make bench`` (random weights; sizes from the bridge-llama issue)."""

from __future__ import annotations

from transformers import GptOssConfig, LlamaConfig

from bridge_llama.gpt_oss import GPT_OSS_YARN


def bench_configs() -> dict[str, object]:
    """Label → HF config: a 6-layer, d_model 384 Llama with GQA (6 query / 2 kv heads), vocab 32000; a GPT-OSS of
    the same size (attention sinks, sliding/full layers, YaRN, 16 experts with top 4)."""
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
        "gpt-oss (6L, d384, GQA 6/2, 16 experts)": GptOssConfig(
            num_hidden_layers=6,
            hidden_size=384,
            head_dim=64,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=256,
            num_local_experts=16,
            num_experts_per_tok=4,
            sliding_window=128,
            max_position_embeddings=256,
            rope_parameters={**GPT_OSS_YARN, "original_max_position_embeddings": 8},  # YaRN's factor 32
            vocab_size=32000,
            architectures=["GptOssForCausalLM"],
        ),
    }
