"""What the example training scripts share: the schedule, the loop, the run and the saved directory.

Each script (``train_induction.py``, ``train_vision.py``) supplies its model, its batches, its evaluation
and its model card; ``run`` trains deterministically, measures, checks acceptance and saves.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

Metrics = dict[str, Any]


class Saveable(Protocol):
    def save_pretrained(self, directory: Path) -> Any: ...


@dataclass(frozen=True)
class Schedule:
    """AdamW with linear warmup, then cosine decay to ``floor`` × the peak rate; gradients clipped at 1."""

    steps: int
    lr: float
    warmup_steps: int
    weight_decay: float
    floor: float

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr * (self.floor + (1 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(
    model: torch.nn.Module,
    schedule: Schedule,
    loss_on_fresh_batch: Callable[[torch.Generator], torch.Tensor],
    seed: int,
    report_every: int = 50,
) -> float:
    """Train ``model`` in place, one fresh batch per step (drawn from a generator seeded by ``seed``);
    return the loss of the final step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    model.train()
    loss_value = float("nan")
    bar = tqdm(range(schedule.steps), desc="train", dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(step)
        loss = loss_on_fresh_batch(generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = loss.item()
        if step % report_every == 0:
            bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval()
    return loss_value


def run(
    args: argparse.Namespace,
    build_model: Callable[[], torch.nn.Module],
    preprocessor: Saveable,
    schedule: Schedule,
    loss_on_fresh_batch: Callable[[torch.nn.Module, torch.Generator], torch.Tensor],
    evaluate: Callable[[torch.nn.Module], Metrics],
    check_acceptance: Callable[[Metrics], list[str]],
    print_report: Callable[[Metrics], None],
    model_card: Callable[[Metrics], str],
    report_every: int = 50,
) -> None:
    """Build, train, measure, check and save to ``args.out``: the model (safetensors), its tokenizer or
    image processor, ``metrics.json`` and the model card ``README.md``. Deterministic: torch is seeded by
    ``args.seed`` before the model is built, runs on ``args.threads`` threads, deterministic algorithms only."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}")
    start, start_cpu = time.perf_counter(), time.process_time()
    final_loss = train(
        model, schedule, lambda generator: loss_on_fresh_batch(model, generator), args.seed, report_every
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    print(f"final training loss {final_loss:.4f}, wall time {seconds:.1f} s, CPU time {cpu_seconds:.1f} s")

    metrics = evaluate(model)
    metrics.update(
        seed=args.seed,
        steps=schedule.steps,
        threads=args.threads,
        train_seconds=round(seconds, 1),
        train_cpu_seconds=round(cpu_seconds, 1),
        final_train_loss=final_loss,
        parameters=n_params,
    )
    print_report(metrics)
    failed = check_acceptance(metrics)
    print("acceptance: " + ("PASS" if not failed else "FAIL: " + "; ".join(failed)))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    preprocessor.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "README.md").write_text(model_card(metrics))
    print(f"saved to {out}")
