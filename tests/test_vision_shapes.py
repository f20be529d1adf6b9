"""The procedural shapes (bridge.shapes) and the vision demo's tensor helpers, against direct computations."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge_vision.demo import PatchGrid, patch_attention, random_patches, replace_patches, share_on, top_patches
from bridge_vision.shapes import CLASSES, NO_SHAPE, SHAPES, draw_shapes, normalize, patch_coverage, shape_masks

SIZE = 96  # a large canvas keeps the pixel count close to the shape's area


def area(shape: str, r: float) -> float:
    """The shape's area in pixels, from its definition in bridge.shapes."""
    return {
        "circle": math.pi * r**2,
        "square": (1.6 * r) ** 2,
        "triangle": 0.5 * (2 * 0.55 * 1.8 * r) * (1.8 * r),
        "cross": 2 * (2 * r) * (0.6 * r) - (0.6 * r) ** 2,
        NO_SHAPE: 0.0,
    }[shape]


@settings(max_examples=40, deadline=None)
@given(
    label=st.integers(0, len(CLASSES) - 1),
    r=st.floats(7.0, 13.0),
    cx=st.floats(20.0, 76.0),
    cy=st.floats(20.0, 76.0),
)
def test_masks_have_the_shapes_area_and_stay_inside_their_box(label, r, cx, cy):
    mask = shape_masks(torch.tensor([label]), torch.tensor([[cx, cy]]), torch.tensor([r]), SIZE)[0]
    expected = area(CLASSES[label], r)
    assert abs(mask.sum().item() - expected) <= 0.06 * expected + 4 * r  # boundary pixels
    rows, cols = torch.nonzero(mask, as_tuple=True)
    if CLASSES[label] != NO_SHAPE:
        assert cols.min() + 0.5 >= cx - r - 1e-4 and cols.max() + 0.5 <= cx + r + 1e-4
        assert rows.min() + 0.5 >= cy - r - 1e-4 and rows.max() + 0.5 <= cy + r + 1e-4


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6), include_empty=st.booleans())
def test_drawn_images_are_deterministic_and_shapes_are_flat_and_whole(seed, n, include_empty):
    first = draw_shapes(n, torch.Generator().manual_seed(seed), include_empty=include_empty)
    again = draw_shapes(n, torch.Generator().manual_seed(seed), include_empty=include_empty)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert first.images.shape == (n, 3, 48, 48) and first.images.dtype == torch.uint8
    if not include_empty:
        assert (first.labels < len(SHAPES)).all()
    for image, label, mask in zip(first.images, first.labels, first.masks, strict=True):
        background = image[:, ~mask]  # [3, n_background_pixels]
        assert background.max() <= 115
        if CLASSES[label] == NO_SHAPE:
            assert not mask.any()
            continue
        shape = image[:, mask]  # [3, n_shape_pixels]
        assert (shape == shape[:, :1]).all() and shape.min() >= 150  # one flat colour, brighter than noise
        # Whole: at least 85% of the shape's area is drawn, so nothing is cut off at the border.
        assert mask.sum() >= 0.85 * area(CLASSES[label], 7.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), patch=st.sampled_from([4, 8, 16]))
def test_patch_coverage_counts_each_patchs_pixels_in_row_major_order(seed, patch):
    masks = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(seed)) > 0.7
    coverage = patch_coverage(masks, patch)
    side = 48 // patch
    for b in range(3):
        for row in range(side):
            for col in range(side):
                block = masks[b, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch]
                assert math.isclose(coverage[b, row * side + col].item(), block.float().mean().item(), abs_tol=1e-6)


def test_normalize_maps_the_byte_range_to_minus_one_one():
    pixels = normalize(torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 3, 1, 1))
    torch.testing.assert_close(pixels.flatten(), torch.tensor([-1.0, 51 / 127.5 - 1, 1.0]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), first_patch=st.integers(0, 1), heads=st.integers(1, 3))
def test_patch_attention_averages_patch_queries_and_renormalises_over_patch_keys(seed, first_patch, heads):
    grid = PatchGrid(image_size=12, patch_size=4, first_patch=first_patch)  # 9 patches
    positions = grid.n_patches + first_patch
    generator = torch.Generator().manual_seed(seed)
    pattern = torch.rand(2, heads, positions, positions, generator=generator).softmax(dim=-1)
    pooled = patch_attention(pattern, grid, "pooled")
    for b in range(2):
        for h in range(heads):
            rows = [pattern[b, h, q, first_patch:] for q in range(first_patch, positions)]
            mean = torch.stack(rows).mean(dim=0)
            torch.testing.assert_close(pooled[b, h], mean / mean.sum())
    if first_patch:
        cls = patch_attention(pattern, grid, "cls")
        torch.testing.assert_close(cls, pattern[:, :, 0, 1:] / pattern[:, :, 0, 1:].sum(-1, keepdim=True))
    torch.testing.assert_close(pooled.sum(-1), torch.ones(2, heads))
    chosen = torch.zeros(2, grid.n_patches, dtype=torch.bool)
    chosen[:, :3] = True
    torch.testing.assert_close(share_on(pooled, chosen), pooled[..., :3].sum(-1))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 9))
def test_patch_choices_pick_k_patches_and_replacement_touches_only_them(seed, k):
    generator = torch.Generator().manual_seed(seed)
    attention = torch.rand(3, 9, generator=generator)
    top = top_patches(attention, k)
    assert (top.sum(dim=1) == k).all()
    assert (attention[top].reshape(3, k).min(dim=1).values >= attention.masked_fill(top, -1).max(dim=1).values).all()
    chosen = random_patches(3, 9, k, generator)
    assert (chosen.sum(dim=1) == k).all()
    embed = torch.randn(3, 9, 5, generator=generator)
    value = torch.randn(5, generator=generator)
    replaced = replace_patches(chosen, value)(embed, None)
    assert torch.equal(replaced[~chosen], embed[~chosen])
    assert torch.equal(replaced[chosen], value.expand(k * 3, 5))
