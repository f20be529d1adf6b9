"""Sizes, token ids and random inputs of the tiny models the family's examples build."""

from __future__ import annotations

from typing import Any

import torch

from bridge.kernel import TINY_SPECIAL_IDS, TINY_VOCAB

TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_IMAGE = dict(image_size=16, patch_size=4)  # a 4 x 4 grid of patches
TINY_TEXT = dict(vocab_size=TINY_VOCAB, max_position_embeddings=32, **TINY_SPECIAL_IDS, **TINY_TOWER)


def random_pixels(hf_vision_config: Any, batch: int, seed: int) -> torch.Tensor:
    """``[batch, channels, height, width]`` (the config's ``image_size``), normal noise (the range a normalized image
    has)."""
    size = hf_vision_config.image_size
    height, width = (size[0], size[1]) if isinstance(size, list | tuple) else (size, size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, hf_vision_config.num_channels, height, width, generator=generator)


def random_tokens(batch: int, pos: int, seed: int) -> torch.Tensor:
    """Random ordinary tokens (no special id: CLIP pools its text at the first EOS)."""
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randint(max(TINY_SPECIAL_IDS.values()) + 2, TINY_VOCAB, (batch, pos), generator=generator)


#: The tiny language models' vocabulary: the tiny tokenizer's, plus the image token (the last id).
TINY_VLM_VOCAB = TINY_VOCAB + 1
IMAGE_TOKEN_ID = TINY_VOCAB
#: A tiny Llama-layout text config (built from transformers' config classes, not from a family plugin).
TINY_TEXT_LM = dict(
    num_hidden_layers=2,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    vocab_size=TINY_VLM_VOCAB,
    **TINY_SPECIAL_IDS,
)
#: Prompt text positions of example inputs, after the BOS and the image tokens.
TEXT_POSITIONS = 6


#: DINOv2's MLP width is ``hidden_size · mlp_ratio`` (64 here); a layer scale other than 1 so that it shows.
TINY_DINOV2 = dict(hidden_size=32, mlp_ratio=2, num_hidden_layers=2, num_attention_heads=4, layerscale_value=0.5)
