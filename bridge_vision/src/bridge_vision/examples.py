"""Examples of the bridge_vision adapters: tiny configs and inputs for the conformance kit and tests."""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    CLIPConfig,
    CLIPVisionConfig,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    Siglip2VisionConfig,
    SiglipConfig,
    SiglipVisionConfig,
    ViTConfig,
)

from bridge.kernel import TINY_VOCAB, ExampleInput, Examples
from bridge_vision.adapters import (
    CLIPAdapter,
    CLIPClassifierAdapter,
    CLIPVisionAdapter,
    CLIPVisionProjectionAdapter,
    Dinov2Adapter,
    Siglip2VisionAdapter,
    SiglipAdapter,
    SiglipClassifierAdapter,
    SiglipVisionAdapter,
    TwoTowerAdapter,
    VisionAdapter,
    ViTAdapter,
    ViTClassifierAdapter,
)
from bridge_vision.tiny import (
    IMAGE_TOKEN_ID,
    TINY_DINOV2,
    TINY_IMAGE,
    TINY_TEXT,
    TINY_TOWER,
    random_pixels,
    random_tokens,
)
from bridge_vision.vlm_examples import VLM_CASES, VLM_EXAMPLES

__all__ = ["EXAMPLES", "IMAGE_TOKEN_ID", "TINY_VOCAB", "VLM_CASES"]


class VisionExamples(Examples):
    adapter = VisionAdapter

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        vision = getattr(hf_config, "vision_config", None) or hf_config
        patches = (vision.image_size // vision.patch_size) ** 2
        registers = getattr(vision, "num_register_tokens", 0) or 0
        positions = patches + cls.adapter.cls_position + registers
        return ExampleInput({"pixel_values": random_pixels(vision, batch, seed)}, {"": (batch, positions)})


class CLIPVisionExamples(VisionExamples):
    adapter = CLIPVisionAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> CLIPVisionConfig:
        return CLIPVisionConfig(
            **TINY_TOWER, **TINY_IMAGE, projection_dim=24, architectures=[architecture or cls.adapter.architectures[0]]
        )


class CLIPVisionProjectionExamples(CLIPVisionExamples):
    adapter = CLIPVisionProjectionAdapter


class SiglipVisionExamples(VisionExamples):
    adapter = SiglipVisionAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> SiglipVisionConfig:
        return SiglipVisionConfig(
            **TINY_TOWER, **TINY_IMAGE, architectures=[architecture or cls.adapter.architectures[0]]
        )


class Siglip2VisionExamples(VisionExamples):
    adapter = Siglip2VisionAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Siglip2VisionConfig:
        return Siglip2VisionConfig(**TINY_TOWER, num_patches=16, patch_size=4, architectures=["Siglip2VisionModel"])

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        """Every image a full 4 x 4 grid but the last, a 2 x 4 grid padded to ``num_patches`` slots."""
        slots, width = hf_config.num_patches, hf_config.num_channels * hf_config.patch_size**2
        generator = torch.Generator().manual_seed(seed)
        pixels = torch.randn(batch, slots, width, generator=generator)
        shapes = torch.tensor([[4, 4]] * batch)
        mask = torch.ones(batch, slots, dtype=torch.long)
        if batch > 1:
            shapes[-1] = torch.tensor([2, 4])
            mask[-1, 8:] = 0
            pixels[-1, 8:] = 0.0
        inputs = {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": shapes}
        return ExampleInput(inputs, {"": (batch, slots)})


class CLIPClassifierExamples(VisionExamples):
    adapter = CLIPClassifierAdapter

    unread_hooks = ("ln_post.hook_scale", "ln_post.hook_normalized")  # HF's classifier reads the patches before ln_post

    @classmethod
    def example_config(cls, architecture: str | None = None) -> CLIPConfig:
        return CLIPConfig(
            vision_config=dict(**TINY_TOWER, **TINY_IMAGE),
            text_config=TINY_TEXT,
            num_labels=5,
            architectures=["CLIPForImageClassification"],
        )


class SiglipClassifierExamples(VisionExamples):
    adapter = SiglipClassifierAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> SiglipConfig:
        return SiglipConfig(
            vision_config=dict(**TINY_TOWER, **TINY_IMAGE),
            text_config=TINY_TEXT,
            num_labels=5,
            architectures=["SiglipForImageClassification"],
        )


class ViTExamples(VisionExamples):
    adapter = ViTAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> ViTConfig:
        return ViTConfig(**TINY_TOWER, **TINY_IMAGE, architectures=[architecture or cls.adapter.architectures[0]])


class ViTClassifierExamples(ViTExamples):
    adapter = ViTClassifierAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> ViTConfig:
        return ViTConfig(**TINY_TOWER, **TINY_IMAGE, num_labels=5, architectures=["ViTForImageClassification"])


class Dinov2Examples(VisionExamples):
    adapter = Dinov2Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Dinov2Config | Dinov2WithRegistersConfig:
        architecture = architecture or cls.adapter.architectures[0]
        if architecture == "Dinov2WithRegistersModel":
            return Dinov2WithRegistersConfig(
                **TINY_DINOV2, **TINY_IMAGE, num_register_tokens=2, architectures=[architecture]
            )
        return Dinov2Config(**TINY_DINOV2, **TINY_IMAGE, architectures=[architecture])

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """DINOv2-giant's SwiGLU MLP."""
        return {
            "dinov2-swiglu": Dinov2Config(
                **TINY_DINOV2, **TINY_IMAGE, use_swiglu_ffn=True, architectures=["Dinov2Model"]
            )
        }


class TwoTowerExamples(Examples):
    adapter = TwoTowerAdapter

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        vision = hf_config.vision_config
        pixels = random_pixels(vision, batch, seed)
        patches = (vision.image_size // vision.patch_size) ** 2 + int(cls.adapter.cls_position)
        tokens = random_tokens(batch + 1, 7, seed)
        tokens[:, -1] = hf_config.text_config.eos_token_id  # the pooled text position: the last, so attention matters
        inputs = {"input_ids": tokens, "pixel_values": pixels}
        return ExampleInput(inputs, {"vision": (batch, patches), "text": (batch + 1, 7)})


class CLIPExamples(TwoTowerExamples):
    adapter = CLIPAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> CLIPConfig:
        return CLIPConfig(
            vision_config=dict(**TINY_TOWER, **TINY_IMAGE),
            text_config=TINY_TEXT,
            projection_dim=24,
            architectures=["CLIPModel"],
        )


class SiglipExamples(TwoTowerExamples):
    adapter = SiglipAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> SiglipConfig:
        return SiglipConfig(
            vision_config=dict(**TINY_TOWER, **TINY_IMAGE),
            text_config=dict(**TINY_TEXT, projection_size=32),
            architectures=["SiglipModel"],
        )


#: The examples of every adapter the family registers.
EXAMPLES = (
    CLIPVisionExamples,
    CLIPVisionProjectionExamples,
    SiglipVisionExamples,
    Siglip2VisionExamples,
    CLIPClassifierExamples,
    SiglipClassifierExamples,
    ViTExamples,
    ViTClassifierExamples,
    Dinov2Examples,
    CLIPExamples,
    SiglipExamples,
    *VLM_EXAMPLES,
)
