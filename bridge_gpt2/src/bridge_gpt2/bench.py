"""Benchmark models for ``make bench`` (random weights): 6-layer, d_model 384 GPT-2, Pythia, GPT-Neo, OPT and XGLM."""

from __future__ import annotations

from transformers import GPT2Config, GPTNeoConfig, GPTNeoXConfig, OPTConfig, XGLMConfig


def bench_configs() -> dict[str, object]:
    """Label → HF config (``architectures`` names the model class)."""
    return {
        "gpt2 (6L, d384)": GPT2Config(
            n_layer=6, n_embd=384, n_head=6, n_positions=256, vocab_size=50304, architectures=["GPT2LMHeadModel"]
        ),
        "pythia (6L, d384)": GPTNeoXConfig(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            intermediate_size=1536,
            max_position_embeddings=256,
            rotary_pct=0.25,
            vocab_size=50304,
            architectures=["GPTNeoXForCausalLM"],
        ),
        "gpt-neo (6L, d384)": GPTNeoConfig(
            num_layers=6,
            hidden_size=384,
            num_heads=6,
            attention_types=[[["global", "local"], 3]],
            window_size=128,
            max_position_embeddings=256,
            vocab_size=50304,
            architectures=["GPTNeoForCausalLM"],
        ),
        "opt (6L, d384)": OPTConfig(
            num_hidden_layers=6,
            hidden_size=384,
            word_embed_proj_dim=384,
            num_attention_heads=6,
            ffn_dim=1536,
            max_position_embeddings=256,
            vocab_size=50304,
            architectures=["OPTForCausalLM"],
        ),
        "xglm (6L, d384)": XGLMConfig(
            num_layers=6,
            d_model=384,
            attention_heads=6,
            ffn_dim=1536,
            max_position_embeddings=256,
            vocab_size=50304,
            architectures=["XGLMForCausalLM"],
        ),
    }
