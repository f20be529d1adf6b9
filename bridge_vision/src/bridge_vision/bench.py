"""Benchmark configurations for ``make bench``: small realistic encoders and a small Qwen2.5-VL, randomly
initialised."""

from __future__ import annotations

from transformers import (
    CLIPVisionConfig,
    Dinov2WithRegistersConfig,
    Qwen2_5_VLConfig,
    SiglipVisionConfig,
    ViTConfig,
)

SMALL = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6, image_size=224)
#: The Qwen2.5-VL language model: the Llama benchmark's size (6 layers, d_model 384, GQA 6/2), M-RoPE over its
#: 32 rotary frequencies (head 64) as Qwen2.5-VL splits them (temporal 8, height 12, width 12).
QWEN_TEXT = dict(
    num_hidden_layers=6,
    hidden_size=384,
    num_attention_heads=6,
    num_key_value_heads=2,
    intermediate_size=1024,
    max_position_embeddings=1024,
    vocab_size=32000,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [8, 12, 12]},
)
#: Its image tower: 4 blocks of width 192 (3 heads), 14-pixel patches, 2 x 2 merge, 112-pixel windows in blocks
#: 0 and 2, full attention in blocks 1 and 3.
QWEN_VISION = dict(
    depth=4,
    hidden_size=192,
    intermediate_size=512,
    num_heads=3,
    out_hidden_size=384,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[1, 3],
)


def bench_configs() -> dict[str, object]:
    """Label → HF config (``architectures`` names the model class)."""
    return {
        "clip vision (6L, d384, 224px/32: 50 positions)": CLIPVisionConfig(
            **SMALL, patch_size=32, architectures=["CLIPVisionModel"]
        ),
        "siglip vision (6L, d384, 224px/16: 196 positions)": SiglipVisionConfig(
            **SMALL, patch_size=16, architectures=["SiglipVisionModel"]
        ),
        "vit (6L, d384, 224px/16: 197 positions)": ViTConfig(**SMALL, patch_size=16, architectures=["ViTModel"]),
        "dinov2 + 4 registers (6L, d384, 224px/14: 261 positions)": Dinov2WithRegistersConfig(
            hidden_size=384,
            mlp_ratio=4,
            num_hidden_layers=6,
            num_attention_heads=6,
            image_size=224,
            patch_size=14,
            num_register_tokens=4,
            architectures=["Dinov2WithRegistersModel"],
        ),
        "qwen2.5-vl (vision 4L d192, text 6L d384; example images of 4 x 4 and 4 x 8 patches)": Qwen2_5_VLConfig(
            text_config=QWEN_TEXT,
            vision_config=QWEN_VISION,
            image_token_id=31996,
            video_token_id=31997,
            vision_start_token_id=31998,
            vision_end_token_id=31999,
            architectures=["Qwen2_5_VLForConditionalGeneration"],
        ),
    }
