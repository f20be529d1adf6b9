"""The demo for image classifiers trained on ``bridge_vision.shapes``: where the model looks, from hooks only.

``bridge demo --model examples/models/shapes-vit`` draws one fresh image per shape and reports, using only
the bridge's hook points: the prediction against the drawn shape; the attention the pooled positions (and
CLS, where there is one) pay to each patch, from cached ``hook_pattern``, overlaid on the images as a PNG;
the true-class logit when the most-attended patches or as many random patches are mean-ablated at
``hook_patch_embed``, and when each head is zero-ablated at ``hook_z``; and a check that this evidence points
at the patches the shape covers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from bridge.kernel import BridgeError, HookedModel
from bridge_vision.shapes import CLASSES, SHAPES, ShapeImages, draw_shapes, normalize, patch_coverage

Printer = Callable[[str], None]
HookFn = Callable[[torch.Tensor, Any], torch.Tensor]

#: A patch belongs to the shape when the shape covers at least this fraction of its pixels.
SHAPE_PATCH_COVERAGE = 0.1


class NotAShapesModelError(BridgeError):
    """The vision demo draws shapes from ``bridge_vision.shapes``; the model must classify exactly those."""


@dataclass(frozen=True)
class PatchGrid:
    """Where the patches sit among a vision tower's positions."""

    image_size: int
    patch_size: int
    first_patch: int  # 1 with a CLS position in front (CLIP), 0 without (SigLIP)

    @property
    def side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.side**2

    @property
    def patch_positions(self) -> slice:
        return slice(self.first_patch, self.first_patch + self.n_patches)


def patch_grid(model: HookedModel) -> PatchGrid:
    """The patch layout of ``model``'s vision tower, from its HF config and ``cfg.n_ctx``."""
    config = model.hf_model.config
    vision = getattr(config, "vision_config", None) or config
    n_patches = (vision.image_size // vision.patch_size) ** 2
    return PatchGrid(vision.image_size, vision.patch_size, first_patch=model.cfg.n_ctx - n_patches)


def class_names(model: HookedModel) -> list[str]:
    """The model's labels in class order; raises unless they are the classes ``bridge_vision.shapes`` draws."""
    id2label = model.hf_model.config.id2label
    names = [id2label[i] for i in range(len(id2label))]
    if sorted(names) != sorted(CLASSES):
        raise NotAShapesModelError(
            f"the vision demo draws the shapes of bridge_vision.shapes and needs a classifier of exactly the classes "
            f"{', '.join(CLASSES)} "
            f"(this model's classes are {', '.join(names)}). Train one with `python examples/train_vision.py`."
        )
    return names


def draw_one_per_shape(model: HookedModel, seed: int) -> tuple[ShapeImages, torch.Tensor]:
    """One fresh image per shape in ``SHAPES`` order, and the model's class index of each ``[n_shapes]``."""
    names = class_names(model)
    shape_ids = torch.arange(len(SHAPES))
    images = draw_shapes(len(SHAPES), torch.Generator().manual_seed(seed), patch_grid(model).image_size, shape_ids)
    return images, torch.tensor([names.index(shape) for shape in SHAPES])


def model_input(model: HookedModel, images: ShapeImages) -> Any:
    """RGB images as the model takes them: through its image processor if it has one, else normalised."""
    if model.image_processor is not None:
        return list(images.images.permute(0, 2, 3, 1).numpy())  # [h, w, 3] uint8 arrays
    return normalize(images.images)


def shape_patches(images: ShapeImages, grid: PatchGrid) -> torch.Tensor:
    """Which patches each image's shape covers, ``[batch, n_patches]`` bool."""
    return patch_coverage(images.masks, grid.patch_size) >= SHAPE_PATCH_COVERAGE


def patch_attention(pattern: torch.Tensor, grid: PatchGrid, query: Literal["pooled", "cls"]) -> torch.Tensor:
    """Attention to the patch keys, renormalised over them, ``[batch, head, n_patches]``.

    ``pattern`` is a cached ``hook_pattern`` ``[batch, head, query_pos, key_pos]``. ``query="pooled"``
    averages the patch queries (the attention that feeds a mean over the patch tokens);
    ``query="cls"`` is the CLS position's row.
    """
    keys = pattern[..., grid.patch_positions]  # [batch, head, query_pos, n_patches]
    rows = keys[:, :, grid.patch_positions].mean(dim=2) if query == "pooled" else keys[:, :, 0]
    return rows / rows.sum(dim=-1, keepdim=True)


def share_on(attention: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Attention mass ``[batch, ..., n_patches]`` on the chosen patches ``[batch, n_patches]``: ``[batch, ...]``."""
    mask = patches.reshape(patches.shape[0], *([1] * (attention.dim() - 2)), patches.shape[1])
    return (attention * mask).sum(dim=-1)


def mean_patch_embedding(model: HookedModel, seed: int, n_images: int = 64) -> torch.Tensor:
    """The mean of ``hook_patch_embed`` over every patch of ``n_images`` fresh images, ``[d_model]``."""
    images = draw_shapes(n_images, torch.Generator().manual_seed(seed), patch_grid(model).image_size)
    _, cache = model.run_with_cache(model_input(model, images), names_filter="hook_patch_embed")
    return cache["hook_patch_embed"].mean(dim=(0, 1))


def replace_patches(patches: torch.Tensor, value: torch.Tensor) -> HookFn:
    """A ``hook_patch_embed`` hook that sets the chosen patches (``[batch, n_patches]`` bool) to ``value``."""

    def hook(embed: torch.Tensor, hook: Any) -> torch.Tensor:  # embed: [batch, n_patches, d_model]
        return torch.where(patches[..., None], value.to(embed.dtype), embed)

    return hook


def class_logits(model: HookedModel, inputs: Any, fwd_hooks: list[tuple[str, HookFn]] | None = None) -> torch.Tensor:
    """The classifier's logits ``[batch, n_classes]``, optionally under ``fwd_hooks`` (``run_with_hooks``)."""
    with torch.no_grad():
        return model.run_with_hooks(inputs, fwd_hooks=fwd_hooks or [])


def true_class_logit(
    model: HookedModel, inputs: Any, labels: torch.Tensor, fwd_hooks: list[tuple[str, HookFn]] | None = None
) -> torch.Tensor:
    """Each image's logit for its own class ``[batch]``, optionally under ``fwd_hooks``."""
    return class_logits(model, inputs, fwd_hooks).gather(1, labels[:, None])[:, 0]


def top_patches(attention: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` most-attended patches of each image, ``[batch, n_patches]`` bool (``attention`` ``[batch, n]``)."""
    chosen = torch.zeros_like(attention, dtype=torch.bool)
    return chosen.scatter(1, attention.topk(k, dim=1).indices, True)


def random_patches(n_images: int, n_patches: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` random patches per image, ``[n_images, n_patches]`` bool."""
    order = torch.rand(n_images, n_patches, generator=generator).argsort(dim=1)
    return order < k


def zero_head(head: int) -> HookFn:
    """A ``hook_z`` hook that zero-ablates one head."""

    def hook(z: torch.Tensor, hook: Any) -> torch.Tensor:
        z = z.clone()
        z[:, :, head] = 0.0  # [b, p, head, d_head]
        return z

    return hook


def head_ablation_effects(model: HookedModel, inputs: Any, labels: torch.Tensor) -> torch.Tensor:
    """Mean true-class logit with each head zero-ablated at ``hook_z``, ``[n_layers, n_heads]``."""
    effects = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            hooks = [(f"blocks.{layer}.attn.hook_z", zero_head(head))]
            effects[layer, head] = true_class_logit(model, inputs, labels, hooks).mean()
    return effects


def run_vision_demo(model: HookedModel, png: str | Path | None = None, out: Printer = print, seed: int = 2024) -> dict:
    """Classify one fresh image per shape and show, from hooks only, where the model looks and what it uses."""
    grid, cfg, names = patch_grid(model), model.cfg, class_names(model)
    last, has_cls = cfg.n_layers - 1, grid.first_patch == 1
    reads = getattr(model.adapter, "classifier_reads", "mean")  # the query whose attention feeds the classifier
    query: Literal["pooled", "cls"] = "cls" if reads == "cls" else "pooled"
    out(
        f"Image classifier: {grid.side} × {grid.side} patches of {grid.patch_size} px"
        f"{' after a CLS position' if has_cls else ''}; classes {', '.join(names)}. "
        + (
            "The classifier reads CLS after the final norm."
            if query == "cls"
            else "The classifier reads the mean of the final patch tokens."
        )
    )

    images, labels = draw_one_per_shape(model, seed)
    drawn = [names[int(label)] for label in labels]
    inputs = model_input(model, images)
    on_shape = shape_patches(images, grid)  # [batch, n_patches], ground truth from the drawing
    uniform = on_shape.float().mean(dim=1)  # [batch]
    with torch.no_grad():
        logits, cache = model.run_with_cache(inputs, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    predicted = [names[int(i)] for i in logits.argmax(dim=1)]
    probs = logits.softmax(dim=1).max(dim=1).values
    out(f"\nOne fresh image per shape (seed {seed}), prediction from the bridge's logits:")
    out("  drawn      predicted   p       shape covers")
    for i, name in enumerate(drawn):
        out(f"  {name:<10} {predicted[i]:<11} {probs[i]:.3f}   {int(on_shape[i].sum())}/{grid.n_patches} patches")

    pooled = patch_attention(cache["pattern", last], grid, query)  # [batch, head, n_patches]
    pooled_map = pooled.mean(dim=1)  # [batch, n_patches]
    pooled_share = share_on(pooled, on_shape)  # [batch, head]
    label = "CLS" if query == "cls" else "pool"
    out(
        "\nShare of attention to patches that lands on the shape's patches, from cached "
        "blocks.{layer}.attn.hook_pattern ("
        + ("CLS: the classifier's query" if query == "cls" else "pool: mean over the patch queries")
        + "; uniform: the share of patches the shape covers):"
    )
    header = "  image      uniform   " + " ".join(f"{label:>4} L{last}h{h}" for h in range(cfg.n_heads))
    cls_share = None
    if has_cls:
        cls_rows = [patch_attention(cache["pattern", layer], grid, "cls") for layer in range(cfg.n_layers)]
        cls_share = torch.stack([share_on(rows, on_shape) for rows in cls_rows], dim=1)  # [batch, layer, head]
        header += "   " + "   ".join(f"CLS L{layer} (mean)" for layer in range(cfg.n_layers))
    out(header)
    for i, name in enumerate(drawn):
        row = f"  {name:<10} {uniform[i]:.3f}     " + " ".join(f"{s:9.3f}" for s in pooled_share[i].tolist())
        if cls_share is not None:
            row += "   " + "   ".join(f"{s:13.3f}" for s in cls_share[i].mean(dim=1).tolist())
        out(row)

    k = max(1, grid.n_patches // 6)
    mean_embed = mean_patch_embedding(model, seed + 1)
    base = logits.gather(1, labels[:, None])[:, 0]  # [batch]
    top = top_patches(pooled_map, k)
    top_logits = class_logits(model, inputs, [("hook_patch_embed", replace_patches(top, mean_embed))])
    ablate_top = top_logits.gather(1, labels[:, None])[:, 0]
    generator = torch.Generator().manual_seed(seed + 2)
    random_draws = torch.stack(
        [
            true_class_logit(model, inputs, labels, [("hook_patch_embed", replace_patches(chosen, mean_embed))])
            for chosen in (random_patches(len(drawn), grid.n_patches, k, generator) for _ in range(8))
        ]
    ).mean(dim=0)
    out(
        f"\nTrue-class logit (run_with_hooks), mean-ablating {k} patches at hook_patch_embed "
        "(set to the mean patch embedding of 64 fresh images):"
    )
    out(f"  image      clean    top-{k} attended (now predicted)    {k} random (mean of 8 draws)")
    for i, name in enumerate(drawn):
        now = names[int(top_logits[i].argmax())]
        out(
            f"  {name:<10} {base[i]:7.3f}  {ablate_top[i]:7.3f} ({ablate_top[i] - base[i]:+7.3f}, {now:<8})  "
            f"{random_draws[i]:7.3f} ({random_draws[i] - base[i]:+7.3f})"
        )

    head_effect = head_ablation_effects(model, inputs, labels) - base.mean()  # [layer, head]
    out("\nMean change in the true-class logit when zero-ablating one head at hook_z:")
    out("  layer  " + "  ".join(f"   h{h}  " for h in range(cfg.n_heads)))
    for layer in range(cfg.n_layers):
        out(f"  {layer:<5}  " + "  ".join(f"{e:+7.3f}" for e in head_effect[layer].tolist()))

    correct = sum(p == d for p, d in zip(predicted, drawn, strict=True))
    looks_at_shape = bool((pooled_share.mean(dim=1) > 2 * uniform).all())
    where = "every image"
    if query == "cls" and cls_share is not None:  # CLS gathers across layers: the shape read in any layer counts
        looks_at_shape = bool((cls_share.mean(dim=2) > 2 * uniform[:, None]).any(dim=1).all())
        where = "in some layer, every image"
    top_drop, random_drop = (base - ablate_top).mean().item(), (base - random_draws).mean().item()
    top_on_shape = share_on(top.float(), on_shape) / k  # [batch], fraction of the top-k patches on the shape
    checks = {
        f"predictions match the drawn shape ({correct}/{len(drawn)})": correct == len(drawn),
        f"{'CLS' if query == 'cls' else 'pooled'} attention on the shape's patches > 2 × uniform, {where}": (
            looks_at_shape
        ),
        f"ablating the top-{k} attended patches lowers the logit more than {k} random ones "
        f"({-top_drop:+.2f} vs {-random_drop:+.2f})": top_drop > random_drop,
    }
    out("\nCheck (the drawn shape and its patches are ground truth; the evidence above came from hooks only):")
    for description, ok in checks.items():
        out(f"  [{'PASS' if ok else 'FAIL'}] {description}")
    out(f"  {top_on_shape.mean():.0%} of the top-{k} attended patches lie on the shape")

    result = {
        "classes": names,
        "drawn": drawn,
        "predicted": predicted,
        "pooled_share_on_shape": pooled_share.mean(dim=1).tolist(),
        "uniform_share": uniform.tolist(),
        "logit": base.tolist(),
        "logit_top_ablated": ablate_top.tolist(),
        "logit_random_ablated": random_draws.tolist(),
        "head_effect": head_effect.tolist(),
        "checks_passed": all(checks.values()),
        "png": None,
    }
    if png is not None:
        titles = [f"drawn {d}, predicted {p}" for d, p in zip(drawn, predicted, strict=True)]
        result["png"] = draw_attention_overlay(images, pooled_map, grid, titles, Path(png), last, out, query)
    return result


def draw_attention_overlay(
    images: ShapeImages,
    attention: torch.Tensor,
    grid: PatchGrid,
    titles: list[str],
    png: Path,
    layer: int,
    out: Printer,
    query: Literal["pooled", "cls"] = "pooled",
) -> str | None:
    """Draw each image with its patch attention (``[batch, n_patches]``) overlaid and the shape outlined."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        out("\n(matplotlib not installed: `pip install bridge-core[viz]` to draw the attention)")
        return None
    n = len(titles)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    heat = attention.reshape(n, grid.side, grid.side)  # [batch, grid_h, grid_w], patches row-major
    extent = (0, grid.image_size, grid.image_size, 0)
    for i, ax in enumerate(axes[0]):
        ax.imshow(images.images[i].permute(1, 2, 0).numpy(), extent=extent)
        overlay = ax.imshow(heat[i].numpy(), cmap="magma", alpha=0.55, extent=extent, vmin=0, vmax=float(heat.max()))
        centers = torch.arange(grid.image_size) + 0.5  # pixel centres, in the image's coordinates
        ax.contour(centers, centers, images.masks[i].float(), levels=[0.5], colors="cyan", linewidths=1.0)
        ax.set_xticks(range(0, grid.image_size + 1, grid.patch_size))
        ax.set_yticks(range(0, grid.image_size + 1, grid.patch_size))
        ax.tick_params(labelbottom=False, labelleft=False, length=0)
        ax.grid(color="white", linewidth=0.3, alpha=0.5)
        ax.set_title(titles[i], fontsize=9)
    fig.colorbar(overlay, ax=axes[0].tolist(), fraction=0.02, pad=0.02)
    what = "the CLS query" if query == "cls" else "patch queries (the pooled positions)"
    fig.suptitle(f"blocks.{layer}.attn.hook_pattern: mean over heads and {what}; cyan: the shape", fontsize=9)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    out(f"\nWrote the attention overlay to {png}")
    return str(png)
