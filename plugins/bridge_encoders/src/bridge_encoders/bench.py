"""Benchmark configurations for ``make bench``: small, randomly initialised, one per layout."""

from __future__ import annotations

from transformers import BertConfig, T5Config, T5GemmaConfig, WhisperConfig


def _gemma_stack() -> dict[str, object]:
    """One stack of the T5Gemma bench model: 4 Gemma 2 layers, 6 heads over 2 key-value heads, sliding/global."""
    return dict(
        vocab_size=32000,
        hidden_size=384,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=64,
        query_pre_attn_scalar=64,
        sliding_window=64,
    )


def bench_configs() -> dict[str, object]:
    """Label → HF config (``architectures`` names the model class)."""
    return {
        "bert (6L, d384, MLM)": BertConfig(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            intermediate_size=1536,
            vocab_size=30522,
            architectures=["BertForMaskedLM"],
        ),
        "t5 (6+6L, d384, gated)": T5Config(
            num_layers=6,
            num_decoder_layers=6,
            d_model=384,
            d_kv=64,
            d_ff=1024,
            num_heads=6,
            feed_forward_proj="gated-gelu",
            vocab_size=32128,
            decoder_start_token_id=0,
            architectures=["T5ForConditionalGeneration"],
        ),
        "t5gemma (4+4L, d384, GQA, sandwich norms)": T5GemmaConfig(
            encoder=_gemma_stack(),
            decoder=_gemma_stack(),
            vocab_size=32000,
            architectures=["T5GemmaForConditionalGeneration"],
        ),
        "whisper (4+4L, d384, 500 frames)": WhisperConfig(
            num_mel_bins=80,
            encoder_layers=4,
            decoder_layers=4,
            d_model=384,
            encoder_attention_heads=6,
            decoder_attention_heads=6,
            encoder_ffn_dim=1536,
            decoder_ffn_dim=1536,
            max_source_positions=500,
            vocab_size=51865,
            decoder_start_token_id=50258,
            begin_suppress_tokens=None,
            suppress_tokens=None,
            architectures=["WhisperForConditionalGeneration"],
        ),
    }
