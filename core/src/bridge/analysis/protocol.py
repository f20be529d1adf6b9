"""What the analysis layer reads of a hooked model: a small protocol, so analysis never imports ``Bridge``.

``bridge.kernel.HookedModel`` satisfies it (and so does ``bridge.Bridge``, built on it). The analysis mixins
(``WeightViews``, ``WeightProcessing``, ``Generation``, ``SAESplicing``) are written for a class that is one;
the analysis functions take one as their ``model`` argument.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from bridge.kernel.adapter import Adapter
from bridge.kernel.cache import PlainActivationCache
from bridge.kernel.config import BridgeConfig
from bridge.kernel.hook_points import HookHandle, HookPoint


@runtime_checkable
class HookedModelLike(Protocol):
    """The kernel model's surface that analysis code uses: structure, hooks, running, tokens."""

    hf_model: nn.Module
    adapter: Adapter
    cfg: BridgeConfig
    tokenizer: Any
    blocks: nn.ModuleList
    unembed: nn.Module | None
    ln_final: nn.Module | None
    _modules: dict[str, nn.Module]

    @property
    def hook_dict(self) -> dict[str, HookPoint]: ...

    def components(self) -> list[Any]: ...

    def add_hook(
        self, name: str | Callable[[str], bool], hook: Callable[..., Any], dir: str = ..., is_permanent: bool = ...
    ) -> list[HookHandle]: ...

    def reset_hooks(
        self, clear_contexts: bool = ..., direction: str = ..., including_permanent: bool = ...
    ) -> None: ...

    def hooks(
        self, fwd_hooks: Sequence[Any] = ..., bwd_hooks: Sequence[Any] = ...
    ) -> contextlib.AbstractContextManager[Any]: ...

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...

    def set_opt_in(self, suffix: str, enabled: bool = ...) -> None: ...

    def run_with_cache(self, *args: Any, **kwargs: Any) -> tuple[Any, PlainActivationCache]: ...

    def to_tokens(self, input: str | list[str], prepend_bos: bool | None = ...) -> torch.Tensor: ...

    def to_str_tokens(self, input: Any, prepend_bos: bool | None = ...) -> Any: ...

    def get_submodule(self, target: str) -> nn.Module: ...

    def named_children(self) -> Iterator[tuple[str, nn.Module]]: ...

    def named_modules(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Module]]: ...

    def parameters(self, recurse: bool = ...) -> Iterator[nn.Parameter]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


__all__ = ["HookedModelLike"]
