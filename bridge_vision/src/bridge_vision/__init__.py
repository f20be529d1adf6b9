"""bridge-vision: CLIP, SigLIP, SigLIP 2, ViT and DINOv2 image encoders, image classifiers, two-tower models and
vision-language models for bridge."""

from bridge_vision.adapters import (
    ADAPTERS,
    CLIPAdapter,
    CLIPClassifierAdapter,
    CLIPVisionAdapter,
    CLIPVisionProjectionAdapter,
    Dinov2Adapter,
    Siglip2VisionAdapter,
    SiglipAdapter,
    SiglipClassifierAdapter,
    SiglipVisionAdapter,
    ViTAdapter,
    ViTClassifierAdapter,
)

__all__ = [
    "ADAPTERS",
    "CLIPAdapter",
    "CLIPClassifierAdapter",
    "CLIPVisionAdapter",
    "CLIPVisionProjectionAdapter",
    "Dinov2Adapter",
    "Siglip2VisionAdapter",
    "SiglipAdapter",
    "SiglipClassifierAdapter",
    "SiglipVisionAdapter",
    "ViTAdapter",
    "ViTClassifierAdapter",
]
