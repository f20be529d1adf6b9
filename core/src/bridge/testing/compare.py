"""How the kit compares: every failure says what was compared with what, and by how much.

``TOLERANCE`` is the largest absolute difference the kit accepts between the bridge and its HF
reference (fp32, CPU). The kit's tiny models are scaled so that logits have a standard deviation of
order 1 (``fixtures.sensitize``); the worst gap measured over every first-party architecture on both
attention paths is 2.7e-6 (float32 round-off of sums over ``d_model``), so 1e-5 leaves a margin of about four.
"""

from __future__ import annotations

import torch

from bridge.kernel.errors import BridgeError

TOLERANCE = 1e-5


class ConformanceError(BridgeError, AssertionError):
    """A conformance check failed; the message says what was compared, with what, and how far apart."""


class CheckNotRun(ConformanceError):
    """A check could not run on this model (missing reference data, nothing to compare): not a pass."""


def fail(message: str) -> None:
    raise ConformanceError(message)


def max_diff(got: torch.Tensor, expected: torch.Tensor, what: str) -> float:
    """``max |got - expected|``; a shape mismatch is a ``ConformanceError`` naming ``what``, not a broadcast."""
    if tuple(got.shape) != tuple(expected.shape):
        fail(f"{what}: shape {tuple(got.shape)} where the reference has {tuple(expected.shape)}")
    if got.numel() == 0:
        return 0.0
    return (got.detach().double() - expected.detach().double().to(got.device)).abs().max().item()


def expect_close(got: torch.Tensor, expected: torch.Tensor, what: str, tolerance: float = TOLERANCE) -> float:
    """Raise ``ConformanceError`` unless ``got`` and ``expected`` have one shape and differ by at most
    ``tolerance``; returns the difference."""
    diff = max_diff(got, expected, what)
    if not diff <= tolerance:  # also catches NaN
        fail(f"{what}: max |difference| = {diff:.3g} > tolerance {tolerance:.1g} (shape {tuple(got.shape)})")
    return diff


def expect_moved(got: torch.Tensor, baseline: torch.Tensor, what: str, threshold: float) -> float:
    """Raise ``ConformanceError`` unless ``got`` differs from ``baseline`` by more than ``threshold``."""
    diff = max_diff(got, baseline, what)
    if not diff > threshold:
        fail(f"{what}: output moved by only {diff:.3g} (needs > {threshold:.1g})")
    return diff
