"""Tiny saved vision models for tests: the adapter's example model with an image processor beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import CLIPImageProcessor, Siglip2ImageProcessor, SiglipImageProcessor

from bridge.adapter import Adapter
from bridge.testing import save_tiny_model


def example_image_processor(config: Any) -> Any:
    """An image processor for a (tiny) config, built here: nothing is downloaded."""
    vision = getattr(config, "vision_config", None) or config
    if config.model_type.startswith("siglip2"):
        return Siglip2ImageProcessor(patch_size=vision.patch_size, max_num_patches=vision.num_patches)
    size = vision.image_size
    if config.model_type.startswith("clip"):
        return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return SiglipImageProcessor(size={"height": size, "width": size})


def save_example_model(adapter: type[Adapter], architecture: str, directory: str | Path, seed: int = 0) -> Path:
    """The adapter's seeded tiny model, the tiny tokenizer and an image processor, saved to ``directory``."""
    config = adapter.example_config(architecture)
    directory = save_tiny_model(config, directory, seed=seed)
    example_image_processor(config).save_pretrained(directory)
    return directory
