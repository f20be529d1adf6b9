"""Procedural shape images: one filled shape per image, at a random position and size, on a noise background.

The training data of the shipped vision example (``examples/train_vision.py``) and the images of the vision
demo (``bridge demo --model examples/models/shapes-vit``) come from here, so both draw the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import torch

SHAPES = ("circle", "square", "triangle", "cross")
NO_SHAPE = "none"
#: The classes an image can have: a shape, or only the noise background.
CLASSES = (*SHAPES, NO_SHAPE)


@dataclass(frozen=True)
class ShapeImages:
    """A batch of drawn images with their labels and the pixels each shape covers."""

    images: torch.Tensor  # [batch, 3, size, size] uint8 RGB
    labels: torch.Tensor  # [batch] int64, an index into CLASSES
    masks: torch.Tensor  # [batch, size, size] bool, True where the shape is drawn


def shape_masks(labels: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, size: int) -> torch.Tensor:
    """Pixels inside each shape, ``[batch, size, size]`` bool.

    ``labels`` ``[batch]`` index ``CLASSES`` (``NO_SHAPE`` covers nothing); ``centers`` ``[batch, 2]`` are
    (x, y) pixel coordinates and ``radii`` ``[batch]`` the half-extent in pixels. Pixel ``(row, col)`` is
    sampled at its centre.
    """
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    dx = coords[None, None, :] - centers[:, 0, None, None]  # [batch, 1, size]
    dy = coords[None, :, None] - centers[:, 1, None, None]  # [batch, size, 1]
    r = radii[:, None, None]
    circle = dx**2 + dy**2 <= r**2
    square = (dx.abs() <= 0.8 * r) & (dy.abs() <= 0.8 * r)
    triangle = (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= 0.55 * (dy + r))
    cross = ((dx.abs() <= 0.3 * r) & (dy.abs() <= r)) | ((dy.abs() <= 0.3 * r) & (dx.abs() <= r))
    empty = torch.zeros_like(circle)
    stacked = torch.stack([circle, square, triangle, cross, empty])  # [class, batch, size, size]
    return stacked[labels, torch.arange(len(labels))]


def draw_shapes(
    n: int,
    generator: torch.Generator,
    size: int = 48,
    labels: torch.Tensor | None = None,
    include_empty: bool = False,
    min_radius: float = 7.0,
    max_radius: float = 13.0,
) -> ShapeImages:
    """Draw ``n`` images of ``size`` × ``size`` pixels, each with one shape.

    ``labels`` ``[n]`` index ``CLASSES``; by default they are drawn uniformly from ``SHAPES``, or from
    ``CLASSES`` if ``include_empty`` (``NO_SHAPE``: background only).

    Background: independent uniform noise in [0, 115] per pixel and channel. Shape: one flat random
    colour with every channel in [150, 255], centred so the whole shape fits in the image.
    """
    if labels is None:
        labels = torch.randint(0, len(CLASSES) if include_empty else len(SHAPES), (n,), generator=generator)
    radii = min_radius + (max_radius - min_radius) * torch.rand(n, generator=generator)
    centers = radii[:, None] + (size - 2 * radii[:, None]) * torch.rand(n, 2, generator=generator)
    masks = shape_masks(labels, centers, radii, size)
    background = torch.randint(0, 116, (n, 3, size, size), generator=generator)
    colors = torch.randint(150, 256, (n, 3, 1, 1), generator=generator)
    images = torch.where(masks[:, None], colors, background).to(torch.uint8)
    return ShapeImages(images=images, labels=labels, masks=masks)


def patch_coverage(masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Fraction of each patch's pixels inside the shape, ``[batch, n_patches]``, patches in row-major order
    (the order of a ViT's patch tokens)."""
    return einops.reduce(masks.float(), "b (gh ph) (gw pw) -> b (gh gw)", "mean", ph=patch_size, pw=patch_size)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[batch, 3, h, w]`` to the model's ``pixel_values`` (float, mean 0.5 and std 0.5 per channel)."""
    return (images.float() / 255.0 - 0.5) / 0.5
