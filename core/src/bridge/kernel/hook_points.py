"""Hook points: named places where a user function sees, and may replace, an activation.

A hook point costs nothing until a hook is added to it: components only install
their hooked code paths while one of their hook points is active.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from bridge.kernel.errors import BridgeError, HookOutputError, HookShapeError
from bridge.kernel.fingerprint import callable_name

HookFn = Callable[..., Any]
Direction = Literal["fwd", "bwd"]

_ids = itertools.count()


@dataclass(eq=False)
class HookHandle:
    """One hook added to one hook point; `remove()` takes it off again."""

    hook_point: HookPoint
    fn: HookFn
    dir: Direction
    is_permanent: bool = False
    id: int = field(default_factory=lambda: next(_ids))

    def remove(self) -> None:
        self.hook_point._remove(self)

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.remove()


class HookPoint(nn.Module):
    """An identity on the forward pass that runs the hooks added to it.

    A forward hook is ``fn(tensor, hook=hook_point) -> tensor | None``; a returned
    tensor replaces the activation downstream and must keep its shape. A backward
    hook is ``fn(grad, hook=hook_point) -> tensor | None`` and receives the gradient
    of the loss with respect to the activation.

    ``opt_in`` hook points cost extra to compute (per-head results, SSM states):
    they only run once enabled, and are left out of "cache everything" until then.

    A returned tensor must be on the activation's device, except on a model spread over devices by
    accelerate (``move_outputs``, set by the bridge): there a hook's tensor is moved to wherever the
    activation lives, since which device holds which layer is accelerate's choice, not the user's.
    """

    def __init__(self, *, opt_in: bool = False) -> None:
        super().__init__()
        self.name: str = "<unnamed hook point>"
        self.opt_in = opt_in
        self.enabled = not opt_in
        #: Move a returned tensor to the activation's device instead of refusing one on another device.
        self.move_outputs = False
        #: A per-hook-point dict hook functions may keep state in; emptied by ``clear_context``.
        self.ctx: dict[Any, Any] = {}
        self.fwd_hooks: list[HookHandle] = []
        self.bwd_hooks: list[HookHandle] = []
        self._listeners: list[Callable[[], None]] = []

    @property
    def active(self) -> bool:
        """True while at least one hook is attached."""
        return bool(self.fwd_hooks or self.bwd_hooks)

    def layer(self) -> int:
        """The block index of a ``blocks.{i}.…`` hook point."""
        parts = self.name.split(".")
        if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
            raise BridgeError(f"{self.name!r} is not inside a block (only `blocks.{{i}}.…` hook points have a layer)")
        return int(parts[1])

    def fingerprint(self) -> list[str]:
        """What this hook point does to its activation, stably across processes: its hooks' functions by module
        and qualified name, in order (``"fwd:mypackage.steer"``). Empty when it has no hook."""
        return [f"{h.dir}:{callable_name(h.fn)}" for h in [*self.fwd_hooks, *self.bwd_hooks]]

    def clear_context(self) -> None:
        """Empty ``ctx``."""
        self.ctx = {}

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever this hook point gains its first or loses its last hook."""
        self._listeners.append(listener)

    def add_hook(
        self, fn: HookFn, dir: Direction = "fwd", is_permanent: bool = False, prepend: bool = False
    ) -> HookHandle:
        if dir not in ("fwd", "bwd"):
            raise BridgeError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
        if not callable(fn):
            raise BridgeError(
                f"the hook for {self.name!r} must be callable as fn(tensor, hook), got {type(fn).__name__} {fn!r}"
            )
        was_active = self.active
        handle = HookHandle(self, fn, dir, is_permanent)
        hooks = self.fwd_hooks if dir == "fwd" else self.bwd_hooks
        hooks.insert(0, handle) if prepend else hooks.append(handle)
        if not was_active:
            self._notify()
        return handle

    def remove_hooks(self, dir: Direction | Literal["both"] = "both", including_permanent: bool = False) -> None:
        """Remove this hook point's hooks (permanent ones only if asked)."""
        for handle in [*self.fwd_hooks, *self.bwd_hooks]:
            if (dir in ("both", handle.dir)) and (including_permanent or not handle.is_permanent):
                self._remove(handle)

    def _remove(self, handle: HookHandle) -> None:
        hooks = self.fwd_hooks if handle.dir == "fwd" else self.bwd_hooks
        if handle in hooks:
            hooks.remove(handle)
            if not self.active:
                self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # bypasses nn.Module's call machinery
        if not (self.fwd_hooks or self.bwd_hooks):
            return x
        if self.fwd_hooks and x.requires_grad and x._is_view():
            x = x.clone()  # a hook may edit its argument in place; autograd refuses that on split/select views
        for handle in list(self.fwd_hooks):
            out = handle.fn(x, hook=self)
            if out is not None:
                self._check_output(out, x, handle.fn, "Hook")
                x = out.to(x.device)
        if self.bwd_hooks and x.requires_grad:
            handles = tuple(self.bwd_hooks)
            x.register_hook(lambda grad: self._run_backward_hooks(grad, handles))
        return x

    def _check_output(self, out: Any, x: torch.Tensor, fn: HookFn, kind: str) -> None:
        """Raise unless ``out`` can stand in for ``x``: a tensor of the same shape, dtype and device."""
        what = f"{kind} {getattr(fn, '__name__', fn)!r} on {self.name!r}"
        if not isinstance(out, torch.Tensor):
            raise HookOutputError(
                f"{what} returned a {type(out).__name__}; return a tensor of shape {tuple(x.shape)} or None."
            )
        if out.shape != x.shape:
            raise HookShapeError(
                f"{what} returned shape {tuple(out.shape)}, but the activation has shape {tuple(x.shape)}; "
                "return a tensor of the same shape (or None to keep the activation)."
            )
        if out.dtype != x.dtype:
            raise HookOutputError(
                f"{what} returned dtype {out.dtype}, but the activation is {x.dtype}; "
                f"cast it back (`.to({x.dtype})`) before returning."
            )
        if out.device != x.device and self.move_outputs:
            return
        if out.device != x.device:
            raise HookOutputError(
                f"{what} returned a tensor on {out.device}, but the activation is on {x.device}; "
                f"move it back (`.to('{x.device}')`) before returning."
            )

    def _run_backward_hooks(self, grad: torch.Tensor, handles: tuple[HookHandle, ...]) -> torch.Tensor:
        """The backward hooks that were attached when the forward pass ran (so a backward pass
        after ``run_with_hooks`` returns still reaches them)."""
        for handle in handles:
            out = handle.fn(grad, hook=self)
            if out is not None:
                self._check_output(out, grad, handle.fn, "Backward hook")
                grad = out.to(grad.device)
        return grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    # torch's module hooks, expressed as hook-point hooks (``__call__`` does not run torch's machinery)

    def register_forward_hook(self, hook: Callable[..., Any], *, prepend: bool = False, **options: Any) -> HookHandle:
        """``hook(module, (x,), x) -> tensor | None``, as a forward hook of this hook point; returns its handle."""
        self._plain_torch_hook("register_forward_hook", options)
        module_hook = hook
        return self.add_hook(lambda x, hook: module_hook(self, (x,), x), prepend=prepend)

    def register_forward_pre_hook(
        self, hook: Callable[..., Any], *, prepend: bool = False, **options: Any
    ) -> HookHandle:
        """``hook(module, (x,)) -> tensor | (tensor,) | None``, as a forward hook of this hook point (the
        input and output of an identity are the same activation); returns its handle."""
        self._plain_torch_hook("register_forward_pre_hook", options)

        module_hook = hook

        def as_hook(x: torch.Tensor, hook: HookPoint) -> torch.Tensor | None:
            out = module_hook(self, (x,))
            return out[0] if isinstance(out, tuple) else out

        handle = self.add_hook(as_hook, prepend=prepend)
        if not prepend:  # after the pre-hooks already there, before every other hook
            self.fwd_hooks.remove(handle)
            leading = next((i for i, h in enumerate(self.fwd_hooks) if not getattr(h, "torch_pre", False)), None)
            self.fwd_hooks.insert(len(self.fwd_hooks) if leading is None else leading, handle)
        handle.torch_pre = True
        return handle

    def register_full_backward_hook(self, *_args: Any, **_kwargs: Any) -> None:
        raise BridgeError(
            f"{self.name!r}: torch backward module hooks do not run on hook points; add a backward hook with "
            "`hook_point.add_hook(fn, dir='bwd')` (fn(grad, hook) receives the activation's gradient)."
        )

    register_full_backward_pre_hook = register_full_backward_hook
    register_backward_hook = register_full_backward_hook

    def _plain_torch_hook(self, method: str, options: dict[str, Any]) -> None:
        if any(options.values()):
            raise BridgeError(
                f"{self.name!r}: {method} on a hook point takes no {sorted(k for k, v in options.items() if v)}; "
                "use `hook_point.add_hook(fn)` for anything beyond a plain hook."
            )

    def extra_repr(self) -> str:
        return f"{self.name}, fwd={len(self.fwd_hooks)}, bwd={len(self.bwd_hooks)}" + (
            ", opt-in" if self.opt_in else ""
        )
