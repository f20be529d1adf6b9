"""Digests of what decides a model's activations besides its input: every weight, and what hooks do.

Used to recognise "the same model" later (a harvest resumed in another process must come from the same
weights, SAEs and hooks). A digest reads every byte of every parameter and buffer once: about a second per
few GB, nothing next to running the model over a corpus.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def update_with_tensor(digest: Any, name: str, tensor: torch.Tensor | None) -> None:
    """Feed ``name``, the dtype, the shape and the bytes of ``tensor`` to ``digest`` (a ``hashlib`` object)."""
    if tensor is None:
        digest.update(f"{name}:none;".encode())
        return
    digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
    data = tensor.detach()
    if data.device.type != "cpu":
        data = data.cpu()
    data = data.contiguous().reshape(-1)
    if data.dtype == torch.bool:
        data = data.to(torch.uint8)
    digest.update(data.view(torch.uint8).numpy().tobytes())


def tensors_digest(tensors: Iterable[tuple[str, torch.Tensor | None]]) -> str:
    """The sha256 of named tensors (their names, dtypes, shapes and bytes), in the order given."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        update_with_tensor(digest, name, tensor)
    return digest.hexdigest()


def weights_digest(model: nn.Module) -> str:
    """The sha256 of every parameter and buffer of ``model`` (names included), the values of weights accelerate
    offloaded (on the ``meta`` device between calls) read from where accelerate keeps them."""
    offloaded = _offloaded_values(model)
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return tensors_digest(
        (name, offloaded.get(name, tensor) if tensor.device.type == "meta" else tensor) for name, tensor in named
    )


def _offloaded_values(model: nn.Module) -> dict[str, torch.Tensor | None]:
    """Full name → value of each weight an accelerate hook keeps off the module (``weights_map``); ``None``
    where it cannot be read (then only its name, dtype and shape count)."""
    values: dict[str, torch.Tensor | None] = {}
    for path, module in model.named_modules():
        hook = module.__dict__.get("_hf_hook")
        for part in getattr(hook, "hooks", (hook,)) if hook is not None else ():
            weights = getattr(part, "weights_map", None)
            if weights is None or not getattr(part, "offload", False):
                continue
            recurse = bool(getattr(part, "place_submodules", False))
            local = [*module.named_parameters(recurse=recurse), *module.named_buffers(recurse=recurse)]
            for name, tensor in local:
                if tensor.device.type != "meta":
                    continue
                try:
                    values[f"{path}.{name}" if path else name] = weights[name]
                except (KeyError, OSError):
                    values[f"{path}.{name}" if path else name] = None
    return values


def callable_name(fn: Any) -> str:
    """A stable description of a hook function: its module and qualified name (a partial: of what it wraps)."""
    inner = getattr(fn, "func", fn)
    module = getattr(inner, "__module__", None) or type(inner).__module__
    qualname = getattr(inner, "__qualname__", None) or type(inner).__qualname__
    return f"{module}.{qualname}"


__all__ = ["callable_name", "tensors_digest", "update_with_tensor", "weights_digest"]
