"""The component base: a wrapper around one HF module that owns hook points.

A component never changes the HF module while none of its hook points is
active. When one becomes active it *attaches* what it needs (a forward override
or a torch module hook on an HF module) and detaches it again when the last hook
goes, so a forward pass with no hooks runs exactly the HF code.

What an attachment puts on an HF module copies and pickles as the HF behaviour it
stands in for (the module's own ``forward``, a hook that does nothing), so a deep
copy or a saved model never calls back into the bridge.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from bridge.kernel.components.weight_views import MissingAttributeError
from bridge.kernel.dispatch import call_within_accelerate_hook
from bridge.kernel.hook_points import HookPoint


class Attachment:
    """Something a component puts on an HF module while some hook points are active."""

    def __init__(self, module: nn.Module, hooks: tuple[HookPoint, ...], when: Callable[[], bool] | None = None):
        self.module = module
        self.hooks = hooks
        self.when = when
        self.attached = False

    def wanted(self) -> bool:
        if self.when is not None and not self.when():
            return False
        return any(h.active for h in self.hooks)

    def sync(self) -> None:
        want = self.wanted()
        if want and not self.attached:
            self._attach()
            self.attached = True
        elif self.attached and not want:
            self._detach()
            self.attached = False

    def detach(self) -> None:
        """Take this attachment off its module now, whatever its hook points say."""
        if self.attached:
            self._detach()
            self.attached = False

    def _attach(self) -> None:
        raise NotImplementedError

    def _detach(self) -> None:
        raise NotImplementedError


class ForwardOverride(Attachment):
    """Replace ``module.forward`` by ``fn(original_forward, *args, **kwargs)``.

    The original is whatever ``module.forward`` was when attached (an instance-level
    forward set by another library is kept and restored). On a module accelerate placed or
    offloaded (``bridge.dispatch``), ``fn`` runs inside accelerate's hooks with the weights loaded.
    """

    def __init__(self, module: nn.Module, fn: Callable[..., Any], hooks: tuple[HookPoint, ...], when=None):
        super().__init__(module, hooks, when)
        self.fn = fn
        self._had_instance_forward = False
        self._previous: Any = None

    def _attach(self) -> None:
        self._had_instance_forward = "forward" in self.module.__dict__
        self._previous = self.module.__dict__.get("forward")
        hooked = _HookedForward(self.module, self.fn, self.module.forward, self._previous)
        hooked.accelerated = any("_hf_hook" in m.__dict__ for m in self.module.modules())
        self.module.forward = hooked

    def _detach(self) -> None:
        if self._had_instance_forward:
            self.module.forward = self._previous
        else:
            self.module.__dict__.pop("forward", None)
        self._previous = None


class _HookedForward:
    """The instance ``forward`` of an overridden module: ``fn(original, *args, **kwargs)``.

    A deep copy or a pickle of it is the forward the module had before (its class's ``forward``
    bound to the copy, or the instance forward it replaced)."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any], original: Callable, previous: Any) -> None:
        self.module = module
        self.fn = fn
        self.original = original
        self.previous = previous
        self.accelerated = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.accelerated:
            return self.fn(self.original, *args, **kwargs)
        return call_within_accelerate_hook(self.module, self.original, self.fn, *args, **kwargs)

    def __deepcopy__(self, memo: dict) -> Any:
        if self.previous is not None:
            return copy.deepcopy(self.previous, memo)
        module = copy.deepcopy(self.module, memo)
        return types.MethodType(type(module).forward, module)

    def __reduce__(self) -> tuple:
        if self.previous is not None:
            return _same, (self.previous,)
        return getattr, (self.module, "forward")  # unpickled before the module's state: its class forward


def _same(value: Any) -> Any:
    return value


def _ignore(*_args: Any) -> None:
    return None


class ModuleHook:
    """A torch module hook installed by a tap; copies and pickles as a hook that does nothing."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __deepcopy__(self, memo: dict) -> Callable[..., None]:
        return _ignore

    def __reduce__(self) -> tuple:
        return _same, (_ignore,)


class _Tap(Attachment):
    """Run ``fn`` on an HF module's output or first positional input through a torch module hook."""

    def __init__(self, module: nn.Module, fn: Callable[[Any], Any], hooks: tuple[HookPoint, ...], when=None):
        super().__init__(module, hooks, when)
        self.fn = fn
        self._handle: RemovableHandle | None = None

    def _register(self, fn: Callable[[Any], Any]) -> RemovableHandle:
        raise NotImplementedError

    def _attach(self) -> None:
        self._handle = self._register(self.fn)

    def _detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = None


class OutputTap(_Tap):
    """Run ``fn(output)`` on an HF module's output (a torch forward hook) and use its result."""

    def _register(self, fn: Callable[[Any], Any]) -> RemovableHandle:
        return self.module.register_forward_hook(ModuleHook(lambda _m, _args, out: fn(out)))


class InputTap(_Tap):
    """Run ``fn(first_input)`` on an HF module's first positional input (a forward pre-hook)."""

    def _register(self, fn: Callable[[Any], Any]) -> RemovableHandle:
        return self.module.register_forward_pre_hook(ModuleHook(lambda _m, args: (fn(args[0]), *args[1:])))


class FlatPositions:
    """Hook points with TransformerLens shapes on modules HF runs on flattened positions (``[b·p, d]``).

    ``source`` is an HF module whose first input is ``[b, p, …]`` around the flattened calls (the block).
    ``wrap(fn)`` gives a tap function that views a ``[b·p, …]`` tensor as ``[b, p, …]`` for ``fn`` and
    flattens its result back; ``recorder(hooks)`` is the attachment that records ``(b, p)`` from
    ``source``'s input whenever any of ``hooks`` is active (attach it with the taps)::

        flat = FlatPositions(hf_block)
        self.attach(flat.recorder((self.hook_pre,)))
        self.attach(OutputTap(hf_mlp.fc1, flat.wrap(self.hook_pre), (self.hook_pre,)))
    """

    def __init__(self, source: nn.Module) -> None:
        self.source = source
        self.leading: tuple[int, ...] | None = None

    def _record(self, x: Any) -> Any:
        self.leading = tuple(x.shape[:2])
        return x

    def recorder(self, hooks: tuple[HookPoint, ...]) -> Attachment:
        return InputTap(self.source, self._record, hooks)

    def wrap(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def unflattened(x: Any) -> Any:
            if self.leading is None or x.ndim < 2 or x.shape[0] != self.leading[0] * self.leading[1]:
                return fn(x)  # not flattened (or nothing recorded): as is
            return fn(x.view(*self.leading, *x.shape[1:])).reshape(x.shape)  # [b·p, …] → [b, p, …] → back

        return unflattened


class Component(nn.Module):
    """Base of every component: owns hook points and the attachments that fire them.

    Constructor contract: a component kind is built as ``kind(hf_module, cfg, **options)`` — the HF
    module at its ``Spec`` path, the ``BridgeConfig``, and the ``Spec``'s options as keywords (blocks:
    ``kind(hf_block, cfg, children, paths)``, see ``Block``). A subclass calls ``super().__init__(hf_module)``,
    creates its ``HookPoint`` children and calls ``self.attach(...)`` for each way it reaches into the HF
    module tree (``ForwardOverride``, ``OutputTap``, ``InputTap``). The HF module is ``self.hf_module``
    (also ``self.hf``), a plain attribute, not a registered child, so parameters are owned by the HF
    model alone.
    """

    #: True for components whose HF module calls attention through ``transformers``'
    #: ``AttentionInterface``; the bridge routes the model through the seam only if one does.
    uses_seam: bool = False
    #: The options of the ``Spec`` that built this component (set by ``Spec.build``; blocks: their extra paths).
    spec_options: Mapping[str, Any] = {}

    def __init__(self, hf_module: nn.Module | None) -> None:
        super().__init__()
        object.__setattr__(self, "hf", hf_module)
        self._attachments: list[Attachment] = []

    @property
    def hf_module(self) -> nn.Module | None:
        """The HF module this component wraps (the one at its ``Spec`` path)."""
        return self.hf

    def attach(self, attachment: Attachment) -> Attachment:
        """Register an attachment; it follows the activity of its hook points from now on."""
        self._attachments.append(attachment)
        for hook in attachment.hooks:
            hook.on_change(attachment.sync)
        return attachment

    def sync(self) -> None:
        """Re-check every attachment (after an opt-in setting changes)."""
        for attachment in self._attachments:
            attachment.sync()

    def bind(self) -> None:
        """Called once the whole bridge is built; components that register elsewhere do it here."""

    def detach_all(self) -> None:
        """Take every attachment off the HF modules (used when the bridge is detached)."""
        for attachment in self._attachments:
            attachment.detach()

    def own_hook_points(self) -> list[HookPoint]:
        """This component's own hook points (not its children's)."""
        return [m for m in self.children() if isinstance(m, HookPoint)]

    def __getattr__(self, name: str) -> Any:
        """A missing public attribute (``blocks[0].mixer.W_Q``, ``ln_final.b`` of an RMS norm) raises
        ``MissingAttributeError``, an ``AttributeError`` whose message lists what the component has."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_"):
                raise
            raise MissingAttributeError(self, name) from None
