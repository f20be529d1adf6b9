"""bridge-vision: CLIP, SigLIP and SigLIP 2 image encoders, image classifiers and two-tower models for bridge."""

from bridge_vision.adapters import (
    ADAPTERS,
    CLIPAdapter,
    CLIPClassifierAdapter,
    CLIPVisionAdapter,
    CLIPVisionProjectionAdapter,
    Siglip2VisionAdapter,
    SiglipAdapter,
    SiglipClassifierAdapter,
    SiglipVisionAdapter,
)

__all__ = [
    "ADAPTERS",
    "CLIPAdapter",
    "CLIPClassifierAdapter",
    "CLIPVisionAdapter",
    "CLIPVisionProjectionAdapter",
    "Siglip2VisionAdapter",
    "SiglipAdapter",
    "SiglipClassifierAdapter",
    "SiglipVisionAdapter",
]
