"""A bridge's life: owning its HF model, giving it back, one thread at a time, copies and pickles.

``Lifecycle`` is a mixin of ``HookedModel``; it reads the bridge's ``hf_model``, ``adapter``, ``cfg``,
``tokenizer``, ``image_processor``, ``processor`` and ``_hook_dict``, and keeps ``_detached`` and the running thread.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings
from collections.abc import Iterator
from typing import Any, Self

import torch
from torch import nn

from bridge.kernel import ownership, seam
from bridge.kernel.adapter import Adapter
from bridge.kernel.components.base import Component
from bridge.kernel.config import BridgeConfig
from bridge.kernel.errors import BridgeError
from bridge.kernel.hook_points import HookPoint


class ConcurrentUseError(BridgeError):
    """A bridge was used from a second thread while a forward pass ran in another."""


class Teardown:
    """Gives an HF model back: removes every hook, takes every attachment off, restores attention.

    Holds the parts, never the bridge, so it can run when the bridge is garbage collected."""

    def __init__(self, hf_model: nn.Module) -> None:
        self.hf_model = hf_model
        self.components: list[Component] = []
        self.hook_points: list[HookPoint] = []
        self.routed = False

    def __call__(self) -> None:
        for point in self.hook_points:
            point.remove_hooks("both", including_permanent=True)
        for component in self.components:
            component.detach_all()
        if self.routed:
            seam.disable(self.hf_model)


class Lifecycle:
    """Detaching, the attention implementation behind the bridge's back, the one-thread guard, pausing
    gradient checkpointing under hooks, and copies and pickles of a bridge."""

    hf_model: nn.Module
    adapter: Adapter
    cfg: BridgeConfig
    tokenizer: Any
    image_processor: Any
    processor: Any
    _hook_dict: dict[str, HookPoint]
    _uses_seam: bool

    def _start_lifecycle(self, hf_model: nn.Module) -> Teardown:
        """Claim ``hf_model`` for this bridge; the returned teardown gives it back."""
        self._detached = False
        self._lock = threading.Lock()
        self._running_in: int | None = None
        self._depth = 0
        teardown = Teardown(hf_model)
        self._release = ownership.claim(hf_model, self, teardown)
        return teardown

    def detach(self) -> None:
        """Remove every hook and give the HF model back exactly as it was; the bridge is unusable after."""
        self._detached = True
        self._release()

    def set_attn_implementation(self, name: str) -> None:
        """Change the HF attention implementation the bridge calls when no attention hook needs its own
        (``"sdpa"``, ``"eager"``…); attention hooks keep working."""
        self._check_usable()
        if not self._uses_seam:
            self.hf_model.set_attn_implementation(name)
            return
        seam.disable(self.hf_model)
        try:
            self.hf_model.set_attn_implementation(name)
        finally:
            seam.enable(self.hf_model)

    def _check_usable(self, detached_ok: bool = False) -> None:
        if self._detached and not detached_ok:
            raise BridgeError(
                "this bridge was detached (by `.detach()`, `bridge.unwrap(hf_model)` or a `replace=True` wrap); "
                "it no longer runs or takes hooks. Wrap the model again: `bridge.wrap(hf_model)`."
            )
        running = self._running_in
        if running is not None and running != threading.get_ident():
            raise ConcurrentUseError(
                "this bridge is running a forward pass in another thread; a bridge's hooks are shared by every "
                "thread, so one bridge must not be used from two threads at once. Give each thread its own "
                "bridge (`copy.deepcopy(model)`), or serialise the calls with a lock."
            )

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """Mark a forward pass in flight in this thread (re-entrant within the thread)."""
        me = threading.get_ident()
        with self._lock:
            if self._running_in not in (None, me):
                self._check_usable()
            self._running_in = me
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if not self._depth:
                    self._running_in = None

    @contextlib.contextmanager
    def _checkpointing_paused(self) -> Iterator[None]:
        """Run without gradient checkpointing while hooks are in use and gradients are recorded.

        Checkpointing recomputes blocks during ``backward()``, after temporary hooks are gone, so the
        gradients would be those of an unhooked model. Pausing it keeps them exact, at its memory cost."""
        hf = self.hf_model
        paused = []
        if hf.training and torch.is_grad_enabled() and any(p.active for p in self._hook_dict.values()):
            paused = [m for m in hf.modules() if getattr(m, "gradient_checkpointing", False) is True]
        if not paused:
            yield
            return
        warnings.warn(
            "bridge: gradient checkpointing is paused for forward passes with hooks (it would recompute blocks "
            "after the hooks are removed and give wrong gradients); this pass uses the memory of an "
            "uncheckpointed one.",
            stacklevel=4,
        )
        for module in paused:
            module.gradient_checkpointing = False
        try:
            yield
        finally:
            for module in paused:
                module.gradient_checkpointing = True

    def __copy__(self) -> Self:
        raise BridgeError(
            "a shallow copy of a bridge would share its HF model and hooks; use `copy.deepcopy(model)` "
            "(a new bridge over a deep copy of the HF model)."
        )

    def __deepcopy__(self, memo: dict) -> Self:
        """A new bridge over a deep copy of the HF model, with the same opt-in settings and hooks."""
        self._check_usable()
        hf_copy = copy.deepcopy(self.hf_model, memo)
        clone = _rebuild(
            type(self),
            hf_copy,
            type(self.adapter),
            copy.deepcopy(self.cfg, memo),
            copy.deepcopy(self.tokenizer, memo),
            self._opt_in_state(),
            copy.deepcopy(self.image_processor, memo),
            copy.deepcopy(self.processor, memo),
        )
        for name, point in self._hook_dict.items():
            for handle in [*point.fwd_hooks, *point.bwd_hooks]:
                clone._hook_dict[name].add_hook(handle.fn, dir=handle.dir, is_permanent=handle.is_permanent)
        return clone

    def __reduce_ex__(self, protocol: int) -> tuple:
        self._check_usable()
        hooked = [name for name, point in self._hook_dict.items() if point.active]
        if hooked:
            raise BridgeError(
                f"cannot pickle a bridge with hooks attached ({', '.join(hooked[:3])}"
                f"{'…' if len(hooked) > 3 else ''}): hooks are functions and are not saved. Remove them first "
                "(`model.reset_hooks(including_permanent=True)`) and add them again after loading."
            )
        args = (type(self), self.hf_model, type(self.adapter), self.cfg, self.tokenizer, self._opt_in_state())
        return _rebuild, (*args, self.image_processor, self.processor)

    def _opt_in_state(self) -> dict[str, bool]:
        return {name: point.enabled for name, point in self._hook_dict.items() if point.opt_in}


def _rebuild(
    cls: type[Any],
    hf_model: nn.Module,
    adapter_cls: type[Adapter],
    cfg: BridgeConfig,
    tokenizer: Any,
    opt_in: dict[str, bool],
    image_processor: Any = None,
    processor: Any = None,
) -> Any:
    """Bridge ``hf_model`` as ``wrap`` does, with the given config and opt-in settings (copies, unpickling)."""
    from bridge.kernel.plugins import get_registry

    model = cls(hf_model, adapter_cls(hf_model.config), cfg, tokenizer, image_processor, processor)
    try:
        get_registry().pm.hook.bridge_ready(bridge=model)
    except BaseException:
        model.detach()
        raise
    for name, enabled in opt_in.items():
        model._hook_dict[name].enabled = enabled
    for component in model.components():
        component.sync()
    return model
