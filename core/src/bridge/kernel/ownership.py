"""Which bridge owns an HF model: a record kept beside the model, never on it or its config.

The record maps the model (weakly) to its bridge (weakly) and to the teardown that gives the model
back. So a copy or a pickle of the model carries no ownership, two models sharing a config are
owned independently, and a bridge that is dropped without ``detach()`` gives its model back when it
is garbage collected (its ``weakref.finalize`` runs the teardown).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from bridge.kernel.errors import BridgeError


class AlreadyWrappedError(BridgeError):
    """The HF model is already owned by a live bridge."""


@dataclass(eq=False)
class _Record:
    bridge: weakref.ref
    teardown: weakref.finalize


_records: weakref.WeakKeyDictionary[nn.Module, _Record] = weakref.WeakKeyDictionary()


def owner(hf_model: nn.Module) -> Any:
    """The live bridge that owns ``hf_model``, or None."""
    record = _records.get(hf_model)
    return record.bridge() if record is not None else None


def claim(hf_model: nn.Module, bridge: Any, teardown: Callable[[], None]) -> weakref.finalize:
    """Record ``bridge`` as the owner of ``hf_model``; ``teardown()`` runs at ``release`` or when the
    bridge is collected, whichever comes first. Returns the finalizer (call it to release)."""
    current = _records.get(hf_model)
    if current is not None:
        if current.bridge() is not None:
            raise AlreadyWrappedError(
                f"{type(hf_model).__name__} is already wrapped by a bridge that is still alive. Take it back with "
                "`bridge.unwrap(hf_model)` (that bridge then refuses to run), or wrap again with "
                "`bridge.wrap(hf_model, replace=True)`."
            )
        current.teardown()  # a collected bridge whose finalizer has not run yet
    finalizer = weakref.finalize(bridge, _release, weakref.ref(hf_model), teardown)
    finalizer.atexit = False  # nothing to give back when the interpreter ends
    _records[hf_model] = _Record(weakref.ref(bridge), finalizer)
    return finalizer


def _release(model_ref: weakref.ref, teardown: Callable[[], None]) -> None:
    try:
        teardown()
    finally:
        model = model_ref()
        if model is not None:
            _records.pop(model, None)


def unwrap(hf_model: nn.Module) -> nn.Module:
    """Take ``hf_model`` back from the bridge that owns it (if any), exactly as it was before wrapping.

    The bridge is detached: it refuses to run or take hooks from then on. Returns ``hf_model``."""
    record = _records.get(hf_model)
    if record is not None:
        bridge = record.bridge()
        if bridge is not None:
            bridge.detach()
        else:
            record.teardown()
    return hf_model
