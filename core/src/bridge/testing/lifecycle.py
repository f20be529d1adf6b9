"""Lifecycle checks every family runs: ownership, copies and pickles, and the hook-lifecycle state machine.

    from bridge.testing import check_lifecycle
    def test_lifecycle():
        check_lifecycle(MyAdapter)  # the adapter's first architecture

``check_ownership`` wraps a tiny model of the adapter and checks that it is wrapped once (a second
wrap raises, ``replace=True`` and ``bridge.unwrap`` take it back), that a dropped bridge gives the
model back, and that deep copies and pickles of the bridged model are plain HF models.

``bridge.testing.machine.HookLifecycle`` (needs ``hypothesis``) is a ``RuleBasedStateMachine``:
temporary and permanent forward and backward hooks, nested ``hooks()`` blocks, hooks that raise or
add and remove hooks while running, opt-in toggles and ``stop_at_layer``; and SAEs on residual hook
points: ``add_sae`` (replacing one), ``reset_saes`` (one or all), permanent and temporary hooks on their
latents, nested ``saes()`` blocks over permanent SAEs, ``run_with_saes``. Its invariants: every
hook point holds exactly the hooks the model says it should, and hooks on one hook point fire
equally often; the SAEs are where the model says, with the same hook point objects (a temporary SAE puts
back exactly what it replaced); with no hook point active nothing is attached to any HF module, and the
output is bit-equal to an independent copy of the bare HF model. ``bridge.testing.harvest_machine`` does the
same for harvest interrupts (``check_harvest_interrupts(model)``).
"""

from __future__ import annotations

import copy
import gc
import io
import pickle
import weakref
from typing import Any

import torch
from torch import nn

import bridge
from bridge.testing.examples import AdapterLike, adapter_of
from bridge.testing.plain_models import bare_output, is_plain, tiny_hf_model, tiny_tokens


def check_ownership(adapter: AdapterLike, architecture: str | None = None) -> None:
    """One bridge per model, given back on detach/unwrap/GC; copies and pickles are plain HF models."""
    hf = tiny_hf_model(adapter, architecture)
    reference = copy.deepcopy(hf)
    tokens = tiny_tokens(adapter=adapter, hf_config=hf.config)
    expected = bare_output(reference, tokens, adapter)
    model = bridge.wrap(hf, adapter=adapter_of(adapter))
    try:
        bridge.wrap(hf, adapter=adapter_of(adapter))
    except bridge.AlreadyWrappedError as exc:
        assert "bridge.unwrap(hf_model)" in str(exc) and "replace=True" in str(exc), str(exc)
    else:
        raise AssertionError(f"{adapter.__name__}: a second wrap of one model was not refused")
    model = bridge.wrap(hf, adapter=adapter_of(adapter), replace=True)
    every = [n for n, p in model.hook_dict.items() if p.enabled]
    model.add_hook(lambda n: n in every, _observe, is_permanent=True)

    clone = copy.deepcopy(hf)
    assert is_plain(clone), f"{adapter.__name__}: a deep copy of a bridged model still carries the bridge"
    assert torch.equal(bare_output(clone, tokens, adapter), expected)
    loaded = torch.load(io.BytesIO(_saved(hf)), weights_only=False)
    assert is_plain(loaded), f"{adapter.__name__}: a saved bridged model loads with the bridge on it"
    assert torch.equal(bare_output(loaded, tokens, adapter), expected)

    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None, f"{adapter.__name__}: something keeps a dropped bridge alive"
    assert is_plain(hf), f"{adapter.__name__}: a dropped bridge left hooks or attention routing on the model"
    assert torch.equal(bare_output(hf, tokens, adapter), expected)
    model = bridge.wrap(hf, adapter=adapter_of(adapter))
    model.add_hook(lambda n: n in every, _observe)
    bridge.unwrap(hf)
    assert is_plain(hf)
    try:
        model(tokens)
    except bridge.BridgeError as exc:
        assert "detached" in str(exc), str(exc)
    else:
        raise AssertionError(f"{adapter.__name__}: a bridge taken off its model by unwrap still runs")


def _saved(hf_model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(hf_model, buffer)
    pickle.dumps(hf_model.state_dict())
    return buffer.getvalue()


def _observe(tensor: torch.Tensor, hook: Any) -> None:
    return None


def check_lifecycle(
    adapter: AdapterLike,
    architecture: str | None = None,
    *,
    ownership: bool = True,
    max_examples: int = 40,
    steps: int = 12,
) -> None:
    """``check_ownership`` (unless ``ownership=False``) and the hook-lifecycle state machine on one
    architecture (default: the adapter's first). Bounded: ``max_examples`` runs of up to ``steps`` rules."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    from bridge.testing.machine import make_lifecycle_machine

    architectures = adapter_of(adapter).architectures
    architecture = architecture or (architectures[0] if architectures else None)
    if ownership:
        check_ownership(adapter, architecture)
    run_state_machine_as_test(
        make_lifecycle_machine(adapter, architecture),
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
