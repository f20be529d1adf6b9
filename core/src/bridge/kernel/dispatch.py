"""Models spread over devices by accelerate (``device_map``, CPU/disk offload): where their inputs go.

A model loaded with ``from_pretrained(device_map=...)`` or passed through ``accelerate.dispatch_model``,
``cpu_offload`` or ``disk_offload`` carries accelerate's hooks on its modules: each moves its module's
inputs to an *execution device* and, for offloaded modules, brings the weights there for the call
(their parameters otherwise sit on the ``meta`` device). The bridge adds no hooks of its own for this:
it sends the inputs to the execution device of the input embedding and lets accelerate do the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


def is_dispatched(hf_model: nn.Module) -> bool:
    """Whether accelerate placed ``hf_model`` (a device map, or alignment/offload hooks on any module)."""
    if getattr(hf_model, "hf_device_map", None):
        return True
    return any(hasattr(module, "_hf_hook") for module in hf_model.modules())


def execution_device(module: nn.Module) -> torch.device | None:
    """The device accelerate runs ``module`` on (None when no accelerate hook on it names one)."""
    hook = getattr(module, "_hf_hook", None)
    for part in getattr(hook, "hooks", (hook,)):  # a SequentialHook holds several
        device = getattr(part, "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return None


def input_device(hf_model: nn.Module) -> torch.device:
    """Where token ids and masks go: the execution device of the input embedding, or of its closest
    ancestor with an accelerate hook; else the device the embedding's weight is on (when that is
    not ``meta``); else the CPU."""
    embedding = hf_model.get_input_embeddings()
    names = {id(m): name for name, m in hf_model.named_modules()}
    path = names.get(id(embedding), "")
    modules = dict(hf_model.named_modules())
    parts = path.split(".") if path else []
    for depth in range(len(parts), -1, -1):  # the embedding itself, then each ancestor up to the model
        device = execution_device(modules[".".join(parts[:depth])])
        if device is not None:
            return device
    weight = getattr(embedding, "weight", None)
    if weight is not None and weight.device.type != "meta":
        return weight.device
    return torch.device("cpu")


def call_within_accelerate_hook(module: nn.Module, previous: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any):
    """``fn(original_forward, *args, **kwargs)`` for a module whose forward the bridge replaced.

    An override may read its submodules' weights directly (a re-expressed attention or mixer), so the
    offloaded weights of every submodule are loaded for the whole call (and offloaded again after).
    When the forward it replaced (``previous``) is accelerate's wrapper, the override also runs inside
    the module's own accelerate hook, as the module's forward would: inputs moved to the execution
    device before, outputs handled after; ``original_forward`` is then the forward accelerate wrapped."""
    hook = module.__dict__.get("_hf_hook")
    inner = module.__dict__.get("_old_forward")
    wrapper = getattr(previous, "func", None)  # accelerate's forward is a partial of its own function
    with _submodule_weights_loaded(module):
        if hook is None or inner is None or not getattr(wrapper, "__module__", "").startswith("accelerate."):
            return fn(previous, *args, **kwargs)
        args, kwargs = hook.pre_forward(module, *args, **kwargs)
        with torch.no_grad() if getattr(hook, "no_grad", False) else contextlib.nullcontext():
            output = fn(inner, *args, **kwargs)
        return hook.post_forward(module, output)


@contextlib.contextmanager
def _submodule_weights_loaded(module: nn.Module) -> Iterator[None]:
    """Load the offloaded weights of ``module``'s submodules and keep them loaded (their accelerate hooks
    stop offloading) until the block exits; then offload them again."""
    pinned = []
    try:
        for sub in module.modules():
            hook = sub.__dict__.get("_hf_hook") if sub is not module else None
            for part in getattr(hook, "hooks", (hook,)) if hook is not None else ():
                if getattr(part, "offload", False):
                    part.pre_forward(sub)
                    part.offload = False
                    pinned.append((sub, part))
        yield
    finally:
        for sub, part in reversed(pinned):
            part.offload = True
            part.post_forward(sub, None)


__all__ = ["call_within_accelerate_hook", "execution_device", "input_device", "is_dispatched"]
