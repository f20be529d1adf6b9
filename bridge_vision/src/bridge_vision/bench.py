"""Benchmark configurations for ``make bench``: small realistic encoders, randomly initialised (224 x 224 images)."""

from __future__ import annotations

from transformers import CLIPVisionConfig, SiglipVisionConfig

SMALL = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6, image_size=224)


def bench_configs() -> dict[str, object]:
    """Label → HF config (``architectures`` names the model class)."""
    return {
        "clip vision (6L, d384, 224px/32: 50 positions)": CLIPVisionConfig(
            **SMALL, patch_size=32, architectures=["CLIPVisionModel"]
        ),
        "siglip vision (6L, d384, 224px/16: 196 positions)": SiglipVisionConfig(
            **SMALL, patch_size=16, architectures=["SiglipVisionModel"]
        ),
    }
