"""How the kit compares: every failure says which check failed, what was compared with what, and by how much.

``TOLERANCE`` is the largest absolute difference the kit accepts between the bridge and its HF
reference (fp32, CPU). The kit's tiny models are scaled so that logits have a standard deviation of
order 1 (``fixtures.sensitize``); the worst gap measured over every first-party architecture on both
attention paths is 2.7e-6 (float32 round-off of sums over ``d_model``), so 1e-5 leaves a margin of about four.

Where two computations of one value differ only in the order of a float reduction (a batch of 2 and a batch of 1
go through differently blocked matrix products), the gap grows with the value's magnitude and the reduction's
length: ``rounding_bound`` states it as ``dtype eps × magnitude × reduction length``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from bridge.kernel.errors import BridgeError

TOLERANCE = 1e-5

F = TypeVar("F", bound=Callable[..., Any])


class ConformanceError(BridgeError, AssertionError):
    """A conformance check failed; the message names the check and says what was compared, with what, and how
    far apart."""


class CheckNotRun(ConformanceError):
    """A check could not run on this model (missing reference data, nothing to compare): not a pass."""


class NotApplicable(Exception):
    """A check does not apply to this architecture (it has no attention, no loss…)."""


def fail(message: str) -> None:
    raise ConformanceError(message)


def not_applicable(reason: str) -> None:
    """Stop a check that does not apply to this architecture: a pytest skip when pytest is running,
    else ``NotApplicable`` (which ``run_conformance`` reports). A check that *could* apply but cannot
    run raises ``CheckNotRun`` instead, which fails."""
    import sys

    if "pytest" in sys.modules:
        import pytest

        pytest.skip(reason)
    raise NotApplicable(reason)


def conformance_check(fn: F | None = None, *, paths: tuple[str, ...] = ("native", "hooked")) -> Any:
    """Mark ``fn`` as a conformance check: any failure inside it, whatever its type (an ``AttributeError`` from a
    layer of an unexpected kind, a failed ``torch.testing`` assertion), is raised as a ``ConformanceError`` whose
    message starts with the check's name, chained to the original. ``paths``: the attention paths the check is
    worth running on; ``("native",)`` for checks whose every comparison caches every hook point (or runs no
    attention at all), which puts every layer on the seam's eager path whichever path the ``Pair`` asks for, so the
    ``"hooked"`` run would repeat the ``"native"`` one. ``conformance_test`` reads it."""

    def mark(check: F) -> F:
        name = check.__name__

        @functools.wraps(check)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return check(*args, **kwargs)
            except ConformanceError as err:
                if str(err).startswith(f"{name}: "):
                    raise
                raise type(err)(f"{name}: {err}") from err
            except NotApplicable:
                raise
            except Exception as err:  # every failure inside a check is the check's failure
                raise ConformanceError(f"{name}: {type(err).__name__} inside the check: {err}") from err

        run.paths = paths  # type: ignore[attr-defined]
        run.is_conformance_check = True  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return mark(fn) if fn is not None else mark


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
        fail(f"{what}: max |difference| = {diff:.3g} > tolerance {tolerance:.2g} (shape {tuple(got.shape)})")
    return diff


def expect_moved(got: torch.Tensor, baseline: torch.Tensor, what: str, threshold: float) -> float:
    """Raise ``ConformanceError`` unless ``got`` differs from ``baseline`` by more than ``threshold``."""
    diff = max_diff(got, baseline, what)
    if not diff > threshold:
        fail(f"{what}: output moved by only {diff:.3g} (needs > {threshold:.1g})")
    return diff


def rounding_bound(magnitude: float, reduction: int, dtype: torch.dtype = torch.float32) -> float:
    """How far two computations of one value may differ when they only sum in a different order: the dtype's
    machine epsilon × the value's magnitude × the length of the longest reduction behind it (a sum of ``n``
    rounded terms of size at most ``magnitude`` is off by at most ``n`` eps ``magnitude`` either way)."""
    return torch.finfo(dtype).eps * float(magnitude) * int(reduction)
