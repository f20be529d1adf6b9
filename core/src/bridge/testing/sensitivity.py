"""Every hook point matters: a deterministic perturbation at any one of them moves the model's output.

This proves each hook point's return value is used downstream (a wiring that computes the rest of the
model from the unpatched value fails here), and that the kit's tiny models are sensitive enough for the
other comparisons to see a wrong activation (``fixtures.sensitize``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from bridge.testing.compare import CheckNotRun, conformance_check, fail, max_diff
from bridge.testing.contract import all_opt_ins

if TYPE_CHECKING:
    from bridge.testing.pair import Pair

#: How far the output must move (max absolute difference) when one hook point is perturbed: ten times
#: the kit's tolerance, so a perturbation that "moves" the output only by round-off does not count.
SENSITIVITY = 1e-4


def perturbation(t: torch.Tensor, hook: Any) -> torch.Tensor:
    """``t`` plus fixed Gaussian noise of half its mean magnitude (masked scores, at the dtype's minimum,
    are left out of that magnitude); a new tensor, never an in-place edit. Integer tensors (expert indices)
    are shifted by one, modulo their largest value plus one (so they stay valid indices)."""
    if not t.is_floating_point():
        return (t + 1) % (int(t.max()) + 1)
    finite = t[torch.isfinite(t) & (t.abs() < 1e4)].float()
    size = 0.5 * finite.abs().mean().item() + 1e-2 if finite.numel() else 1.0
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(t.shape, generator=generator).to(dtype=t.dtype, device=t.device)
    return t + size * noise


@conformance_check
def check_every_hook_matters(pair: Pair) -> None:
    """For each hook point of ``hook_dict`` (opt-in ones enabled), a hook returning ``perturbation(t)``
    moves the output (``Pair.return_type``) by more than ``SENSITIVITY``."""
    model = pair.bridge
    tokens = pair.tokens()
    return_types = _return_types(pair)
    with pair.on_path():
        baselines = {r: model(tokens, return_type=r) for r in return_types}
    unread = pair.example_set.unread_hooks
    dead: list[str] = []
    with all_opt_ins(model):
        names = [n for n in model.hook_dict if not (unread and n.endswith(unread))]
        if not names:
            raise CheckNotRun("the bridge has no hook points to perturb")
        for name in names:
            moved = 0.0
            for return_type in return_types:  # the first that moves is enough
                with pair.on_path():
                    got = model.run_with_hooks(tokens, fwd_hooks=[(name, perturbation)], return_type=return_type)
                outputs = zip(_tensors(got), _tensors(baselines[return_type]), strict=True)
                moved = max(max_diff(a, b, f"{return_type} with {name} perturbed") for a, b in outputs)
                if moved > SENSITIVITY:
                    break
            if not moved > SENSITIVITY:
                dead.append(f"{name} ({moved:.2g})")
    if dead:
        fail(
            f"perturbing these hook points moved no output ({', '.join(return_types)}) by more than "
            f"{SENSITIVITY:g} (their return value is ignored, or the model is insensitive to them): {dead}"
        )


def _return_types(pair: Pair) -> list[str]:
    """The kit's ``return_type`` first, then the model's other outputs."""
    fields = pair.bridge.adapter.output_fields or {}
    return list(dict.fromkeys([pair.return_type, *fields]))


def _tensors(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, tuple | list) else (out,)
