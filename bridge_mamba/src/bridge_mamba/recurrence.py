"""A recurrence run one position at a time with its states exposed to a hook that may *set* them.

The SSM mixers' ``scan_states`` covers ``h_t = decay_t * h_{t-1} + inputs_t``; linear attention updates its state
by a matrix (the delta rule subtracts what the state already predicts), so it is written as a step function here,
with the same meaning for a patch: entries the hook changes take the new value and the recurrence carries them on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: ``step(previous_state or None, t) -> state_t``
Step = Callable[[torch.Tensor | None, int], torch.Tensor]


def recurrent_states(
    step: Step,
    length: int,
    initial: torch.Tensor | None,
    hook: Callable[[torch.Tensor], torch.Tensor],
    track_gradients: bool = False,
) -> torch.Tensor:
    """Every state ``h_t = step(h_{t-1}, t)`` for ``t < length`` (``h_{-1} = initial``), ``[b, length, *state]``,
    run through ``hook``. The hook sees all states at once; entries it changes (in place or in the tensor it
    returns) are set, and the states after them are recomputed from them (unchanged entries of those states keep
    the difference the recurrence adds). With a patch or ``track_gradients`` (backward hooks) the recurrence runs
    again through the hook's output, so the gradient a backward hook receives at ``h_t`` is the total one."""

    def run(hooked: torch.Tensor | None = None, changed: torch.Tensor | None = None, clean=None) -> torch.Tensor:
        states, previous = [], initial
        for t in range(length):
            state = step(previous, t)
            if hooked is not None:  # the hooked value, plus whatever the recurrence adds to unchanged entries
                state = hooked[:, t] + torch.where(changed[:, t], 0.0, state - clean[:, t])
            states.append(state)
            previous = state
        return torch.stack(states, dim=1)

    states = run()
    seen = states.detach()
    if states.requires_grad:  # a non-leaf copy: hooks may patch it in place, backward hooks attach to it
        seen = seen.requires_grad_().clone()
    version = seen._version
    hooked = hook(seen)
    in_place = seen._version != version
    if hooked is seen and not in_place and not track_gradients:
        return states
    clean = run().detach() if in_place and not states.requires_grad else states.detach()  # the pre-hook states
    return run(hooked, hooked != clean, clean)
