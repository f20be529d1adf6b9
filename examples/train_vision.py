"""Train a tiny CLIP vision classifier that names the shape drawn in an image.

The model (``CLIPForImageClassification``: a 2-layer ViT on 48 × 48 pixel images in 8 × 8 patches)
is trained from scratch on procedurally generated images: one filled circle, square, triangle or
cross at a random position, size and colour on a noise background (``bridge.shapes``). Every step
draws fresh images. After training, the script measures the accuracy on a fresh held-out set, how
much attention the last layer's pooled patches and the CLS token pay to the shape's patches, and the
effect on the true-class logit of blanking the shape's patches versus as many background patches.
It then saves model, image processor, metrics and a model card to ``--out``.

Run from the repository root::

    python examples/train_vision.py
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import CLIPConfig, CLIPForImageClassification, CLIPImageProcessor

from bridge.shapes import SHAPES, ShapeImages, draw_shapes, normalize, patch_coverage

IMAGE_SIZE = 48
PATCH_SIZE = 8
SHAPE_PATCH_COVERAGE = 0.1  # a patch belongs to the shape when the shape covers at least this fraction of it

Metrics = dict[str, Any]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the training run."""

    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01


@dataclass(frozen=True)
class EvalConfig:
    """The held-out set: fresh images from a seed the training never uses."""

    n_images: int = 2000
    seed: int = 12345


def parse_args() -> argparse.Namespace:
    """Parse command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples/models/shapes-vit"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args()


def build_model() -> CLIPForImageClassification:
    """A freshly initialised 2-layer CLIP vision classifier over ``SHAPES`` (eager attention)."""
    config = CLIPConfig(
        vision_config={
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "num_channels": 3,
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "attention_dropout": 0.0,
        },
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=32,
        id2label=dict(enumerate(SHAPES)),
        label2id={name: i for i, name in enumerate(SHAPES)},
        architectures=["CLIPForImageClassification"],
    )
    return CLIPForImageClassification._from_config(config, attn_implementation="eager")


def build_image_processor() -> CLIPImageProcessor:
    """The processor that turns RGB images into this model's ``pixel_values`` (as ``bridge.shapes.normalize``)."""
    return CLIPImageProcessor(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    )


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup followed by cosine decay to 5% of the peak rate."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(model: CLIPForImageClassification, cfg: TrainConfig, seed: int) -> float:
    """Train ``model`` in place on fresh images every step; return the loss of the final step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    loss_value = float("nan")
    bar = tqdm(range(cfg.steps), desc="train", dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = draw_shapes(cfg.batch_size, generator, size=IMAGE_SIZE)
        loss = model(pixel_values=normalize(batch.images), labels=batch.labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = loss.item()
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval()
    return loss_value


def shape_patches(batch: ShapeImages) -> torch.Tensor:
    """Which patches the shape covers, ``[batch, n_patches]`` bool."""
    return patch_coverage(batch.masks, PATCH_SIZE) >= SHAPE_PATCH_COVERAGE


def true_class_logits(model: CLIPForImageClassification, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The logit of each image's own class, ``[batch]``."""
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    return logits.gather(1, labels[:, None])[:, 0]


def blank_patches(pixel_values: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Set the pixels of the chosen patches (``[batch, n_patches]`` bool) to the background's mean colour."""
    grid = IMAGE_SIZE // PATCH_SIZE
    pixel_mask = patches.reshape(-1, grid, grid).repeat_interleave(PATCH_SIZE, 1).repeat_interleave(PATCH_SIZE, 2)
    background_mean = (57.5 / 255.0 - 0.5) / 0.5
    return torch.where(pixel_mask[:, None], torch.full_like(pixel_values, background_mean), pixel_values)


def matched_background(patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """As many background patches per image as the shape covers, chosen at random, ``[batch, n_patches]`` bool."""
    scores = torch.rand(patches.shape, generator=generator).masked_fill(patches, -1.0)
    order = scores.argsort(dim=1, descending=True)
    ranks = order.argsort(dim=1)
    return ranks < patches.sum(dim=1, keepdim=True)


def evaluate(model: CLIPForImageClassification, eval_cfg: EvalConfig) -> Metrics:
    """Accuracy, attention mass on the shape's patches and patch-blanking effects on a fresh held-out set."""
    generator = torch.Generator().manual_seed(eval_cfg.seed)
    batch = draw_shapes(eval_cfg.n_images, generator, size=IMAGE_SIZE)
    pixel_values = normalize(batch.images)
    with torch.no_grad():
        out = model(pixel_values=pixel_values, output_attentions=True)
    predictions = out.logits.argmax(dim=1)
    accuracy = (predictions == batch.labels).float().mean().item()
    per_class = {
        name: (predictions[batch.labels == i] == i).float().mean().item() for i, name in enumerate(SHAPES)
    }
    on_shape = shape_patches(batch)
    uniform = on_shape.float().mean().item()
    # Last layer: the classifier reads the mean of the patch tokens, so the attention feeding it is the
    # mean over patch queries. CLS: the first query, every layer. Both over patch keys only, renormalised.
    last = out.attentions[-1][:, :, 1:, 1:].mean(dim=2)  # [batch, head, key_patch]
    pooled = last / last.sum(dim=-1, keepdim=True)
    pooled_mass = (pooled * on_shape[:, None]).sum(-1).mean(0)  # [head]
    cls_mass = []
    for layer_attention in out.attentions:
        cls = layer_attention[:, :, 0, 1:]
        cls = cls / cls.sum(dim=-1, keepdim=True)
        cls_mass.append((cls * on_shape[:, None]).sum(-1).mean(0).tolist())

    base = true_class_logits(model, pixel_values, batch.labels)
    shape_blanked = true_class_logits(model, blank_patches(pixel_values, on_shape), batch.labels)
    background = matched_background(on_shape, torch.Generator().manual_seed(eval_cfg.seed + 1))
    background_blanked = true_class_logits(model, blank_patches(pixel_values, background), batch.labels)
    return {
        "eval_images": eval_cfg.n_images,
        "eval_seed": eval_cfg.seed,
        "accuracy": accuracy,
        "accuracy_per_class": per_class,
        "shape_patch_fraction": uniform,
        "pooled_attention_on_shape_per_head": pooled_mass.tolist(),
        "cls_attention_on_shape": cls_mass,
        "true_logit": base.mean().item(),
        "true_logit_shape_blanked": shape_blanked.mean().item(),
        "true_logit_background_blanked": background_blanked.mean().item(),
    }


def check_acceptance(metrics: Metrics) -> list[str]:
    """Return the acceptance criteria that the metrics fail (empty if all pass)."""
    drop_shape = metrics["true_logit"] - metrics["true_logit_shape_blanked"]
    drop_background = metrics["true_logit"] - metrics["true_logit_background_blanked"]
    checks = {
        "held-out accuracy >= 0.9": metrics["accuracy"] >= 0.9,
        "pooled attention on the shape > 2x uniform": max(metrics["pooled_attention_on_shape_per_head"])
        > 2 * metrics["shape_patch_fraction"],
        "blanking the shape drops the logit > 4x more than blanking background": drop_shape > 4 * max(drop_background, 0.0),
    }
    return [name for name, ok in checks.items() if not ok]


def print_report(metrics: Metrics) -> None:
    """Print the evaluation metrics in a compact, readable form."""
    print(f"held-out accuracy   {metrics['accuracy']:.4f}  " + "  ".join(
        f"{name} {acc:.3f}" for name, acc in metrics["accuracy_per_class"].items()
    ))
    print(f"shape patch fraction (uniform attention mass) {metrics['shape_patch_fraction']:.3f}")
    print("pooled last-layer attention on shape per head: " + " ".join(
        f"{m:.3f}" for m in metrics["pooled_attention_on_shape_per_head"]
    ))
    for layer, row in enumerate(metrics["cls_attention_on_shape"]):
        print(f"CLS attention on shape, layer {layer}: " + " ".join(f"{m:.3f}" for m in row))
    print(
        f"true-class logit {metrics['true_logit']:.3f}; shape blanked {metrics['true_logit_shape_blanked']:.3f}; "
        f"background blanked {metrics['true_logit_background_blanked']:.3f}"
    )


def main() -> None:
    """Train, evaluate and save the shape classifier."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr)

    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}")
    start = time.perf_counter()
    final_loss = train(model, cfg, args.seed)
    seconds = time.perf_counter() - start
    print(f"final training loss {final_loss:.4f}, wall time {seconds:.1f} s")

    metrics = evaluate(model, EvalConfig())
    metrics.update(seed=args.seed, steps=cfg.steps, threads=args.threads, train_seconds=round(seconds, 1),
                   final_train_loss=final_loss, parameters=n_params)
    print_report(metrics)
    failed = check_acceptance(metrics)
    print("acceptance: " + ("PASS" if not failed else "FAIL: " + "; ".join(failed)))


if __name__ == "__main__":
    main()
