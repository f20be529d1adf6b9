"""Benchmark configurations for ``make bench``: small, randomly initialised, one per layout."""

from __future__ import annotations

from transformers import BertConfig


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
    }
