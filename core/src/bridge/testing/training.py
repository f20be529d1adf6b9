"""Train mode: the bridge's re-expressed wirings run HF's dropouts where HF runs them, in HF's order.

Every other check runs in eval mode, where a dropout in the wrong place, a missing one or an extra one does
nothing. Here the bridge (every hook point in use, so every wiring and the seam's eager path run) and the HF
reference run in train mode twice: with every dropout probability forced to zero (the outputs must be equal:
train-mode branches are HF's), and with every dropout probability set to ``DROPOUT`` from one seed (the
outputs must still be equal: the same random numbers are drawn, in the same order, for the same tensors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from bridge.testing.compare import TOLERANCE, conformance_check, expect_close, rounding_bound
from bridge.testing.contract import all_opt_ins
from bridge.testing.pair import Pair

#: The dropout probability of the second comparison.
DROPOUT = 0.1


def _dropout_settings(model: nn.Module) -> list[tuple[Any, str, float]]:
    """``(owner, attribute, value)`` for every dropout probability of an HF model: ``nn.Dropout.p``, float module
    attributes named like dropouts (``attention_dropout``, ``dropout``, ``attn_pdrop``…) and the same in its configs."""
    found: list[tuple[Any, str, float]] = []
    configs: dict[int, Any] = {}
    pending = [getattr(m, "config", None) for m in model.modules()]
    while pending:
        config = pending.pop()
        if config is None or isinstance(config, nn.Module) or id(config) in configs or not hasattr(config, "__dict__"):
            continue
        configs[id(config)] = config
        pending += [getattr(config, key, None) for key in getattr(config, "sub_configs", {}) or {}]
    seen: set[tuple[int, str]] = set()
    for owner in [*model.modules(), *configs.values()]:
        names = ["p"] if isinstance(owner, nn.Dropout) else []
        names += [k for k, v in vars(owner).items() if ("dropout" in k or "pdrop" in k) and _is_probability(v)]
        for name in names:
            if (id(owner), name) not in seen:
                seen.add((id(owner), name))
                found.append((owner, name, getattr(owner, name)))
    return found


def _is_probability(value: Any) -> bool:
    return isinstance(value, float) and not isinstance(value, bool) and 0.0 <= value < 1.0


@contextlib.contextmanager
def dropout_everywhere(models: list[nn.Module], p: float) -> Iterator[None]:
    """Train mode and every dropout probability set to ``p`` in each model, restored afterwards."""
    settings = [s for model in models for s in _dropout_settings(model)]
    modes = [(model, model.training) for model in models]
    try:
        for owner, name, _ in settings:
            setattr(owner, name, p)
        for model in models:
            model.train()
        yield
    finally:
        for owner, name, value in settings:
            setattr(owner, name, value)
        for model, training in modes:
            model.train(training)


def _seed(seed: int) -> None:
    """torch's and numpy's generators (HF draws HuBERT's and Wav2Vec2's SpecAugment masks with numpy)."""
    torch.manual_seed(seed)
    np.random.seed(seed)


@conformance_check(paths=("native",))
def check_train_mode(pair: Pair) -> None:
    """In train mode, with every hook point in use: the bridge's output equals HF's with every dropout probability
    forced to zero, and equals HF's with every dropout probability ``DROPOUT`` when both start from one seed (the
    wirings draw HF's random numbers in HF's order)."""
    model = pair.bridge
    tokens = pair.tokens()
    observe = [(lambda name: True, lambda t, hook: None)]
    for p in (0.0, DROPOUT):
        with all_opt_ins(model), dropout_everywhere([model.hf_model, pair.reference], p), torch.no_grad():
            _seed(0)
            got = model.run_with_hooks(tokens, fwd_hooks=observe, return_type=pair.return_type)
            _seed(0)
            expected = pair.reference_output(tokens)
        what = f"{pair.return_type} in train mode, every hook in use, dropout p={p} vs the HF reference (same seed)"
        # opt-in hooks may sum in another order (per-slot expert outputs): allow that rounding, over d_model terms
        bound = TOLERANCE + rounding_bound(float(expected.abs().max()), model.cfg.d_model)
        expect_close(got, expected, what, tolerance=bound)


__all__ = ["DROPOUT", "check_train_mode", "dropout_everywhere"]
