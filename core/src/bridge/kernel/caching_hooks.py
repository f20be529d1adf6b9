"""Caching hooks you attach yourself: TransformerLens's ``get_caching_hooks``, ``add_caching_hooks``, ``cache_all``
and ``cache_some``, for code that builds its own cache instead of calling ``run_with_cache``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from bridge.kernel.cache import keep_positions
from bridge.kernel.hook_points import HookFn, HookHandle, HookPoint
from bridge.kernel.slicing import Slice, SliceInput

NamesFilter = str | Sequence[str] | Callable[[str], bool] | None


class _Hooked(Protocol):
    """What the caching hooks need of ``HookedModel`` (a protocol: no import of it, so no cycle)."""

    def _names(self, names_filter: NamesFilter) -> list[str]: ...

    def add_hook(self, name: str, hook: HookFn, dir: Any = ...) -> list[HookHandle]: ...

    def get_caching_hooks(
        self,
        names_filter: NamesFilter = ...,
        incl_bwd: bool = ...,
        device: str | torch.device | None = ...,
        remove_batch_dim: bool = ...,
        cache: dict[str, torch.Tensor] | None = ...,
        pos_slice: Any = ...,
    ) -> tuple[dict[str, torch.Tensor], list[tuple[str, HookFn]], list[tuple[str, HookFn]]]: ...

    def add_caching_hooks(
        self,
        names_filter: NamesFilter = ...,
        incl_bwd: bool = ...,
        device: str | torch.device | None = ...,
        remove_batch_dim: bool = ...,
        cache: dict[str, torch.Tensor] | None = ...,
    ) -> dict[str, torch.Tensor]: ...


class CachingHooks:
    """Mixed into ``HookedModel``: caching hooks as ``(name, fn)`` pairs, or attached to the model."""

    def get_caching_hooks(
        self: _Hooked,
        names_filter: NamesFilter = None,
        incl_bwd: bool = False,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        cache: dict[str, torch.Tensor] | None = None,
        pos_slice: Slice | SliceInput = None,
    ) -> tuple[dict[str, torch.Tensor], list[tuple[str, HookFn]], list[tuple[str, HookFn]]]:
        """``(cache, fwd_hooks, bwd_hooks)``: hooks that store each selected activation (detached, moved to
        ``device``, only ``pos_slice``'s positions) in ``cache`` under its canonical name, gradients under
        ``name + "_grad"`` (``bwd_hooks`` is empty unless ``incl_bwd``). Nothing is attached: pass the hooks to
        ``hooks()`` or ``run_with_hooks``. ``remove_batch_dim`` drops a leading dimension of size 1 and keeps
        larger batches whole (as TransformerLens 4 does)."""
        store: dict[str, torch.Tensor] = {} if cache is None else cache
        positions = Slice.unwrap(pos_slice)

        def saver(suffix: str) -> HookFn:
            def save(tensor: torch.Tensor, hook: HookPoint) -> None:
                kept = keep_positions(tensor.detach(), hook.name, positions)
                kept = kept if device is None else kept.to(device)
                if remove_batch_dim and kept.ndim and kept.shape[0] == 1:
                    kept = kept[0]
                store[hook.name + suffix] = kept

            return save

        names = self._names(names_filter)
        fwd = [(name, saver("")) for name in names]
        bwd = [(name, saver("_grad")) for name in names] if incl_bwd else []
        return store, fwd, bwd

    def add_caching_hooks(
        self: _Hooked,
        names_filter: NamesFilter = None,
        incl_bwd: bool = False,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Attach ``get_caching_hooks``'s hooks (until ``reset_hooks()``) and return the dict they fill."""
        store, fwd, bwd = self.get_caching_hooks(names_filter, incl_bwd, device, remove_batch_dim, cache)
        for direction, hooks in (("fwd", fwd), ("bwd", bwd)):
            for name, fn in hooks:
                self.add_hook(name, fn, dir=direction)
        return store

    def cache_all(
        self: _Hooked,
        cache: dict[str, torch.Tensor] | None,
        incl_bwd: bool = False,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
    ) -> None:
        """Cache every enabled hook point's activation into ``cache`` on each forward pass, until
        ``reset_hooks()`` (TransformerLens's older API; ``run_with_cache`` is the usual way)."""
        self.add_caching_hooks(None, incl_bwd, device, remove_batch_dim, cache)

    def cache_some(
        self: _Hooked,
        cache: dict[str, torch.Tensor] | None,
        names: Callable[[str], bool],
        incl_bwd: bool = False,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
    ) -> None:
        """``cache_all`` for the hook points whose name passes ``names``."""
        self.add_caching_hooks(names, incl_bwd, device, remove_batch_dim, cache)


__all__ = ["CachingHooks"]
