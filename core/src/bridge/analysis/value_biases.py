"""Where an attention layer's value bias lives, found by probing its projections.

A layer's ``b_V`` (``[n_kv_heads, d_head]``) is part of the bias of one projection module: ``v_proj``, or
a fused q/k/v projection in any layout (grouped, per head, Falcon's kv groups, MLA's ``kv_b_proj``).
Rather than knowing every layout, this asks the layer: for each of its linear modules with a bias,
replace that module's output by distinct marker values ``OFFSET + i`` (``i`` the output index) and read
``hook_v``. If ``hook_v`` then holds markers only, it is a plain selection of that output and the markers
say which bias entries are ``b_V``; if it is unchanged, the module does not feed ``v``; anything else
(a clamp, a norm in between) means ``v`` is not "projection + bias" and the bias cannot be folded.

The forward pass stops as soon as ``hook_v`` fires, and the markers are float64, so they are exact
whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from bridge.analysis.norm_readers import WeightProcessingError

if TYPE_CHECKING:
    from bridge.analysis.protocol import HookedModelLike

OFFSET = 2.0**20


@dataclass(frozen=True)
class ValueBias:
    """``b_V`` of one layer: ``module.bias[index]`` with ``index`` ``[n_v_heads, d_head_v]``."""

    path: str
    module: nn.Module
    index: torch.Tensor

    def value(self) -> torch.Tensor:
        """``b_V`` ``[n_v_heads, d_head_v]`` (a copy)."""
        return self.module.bias.detach()[self.index]

    def zero_(self) -> None:
        self.module.bias.data.view(-1)[self.index.flatten()] = 0


class _Captured(Exception):
    pass


def _capture(
    bridge: HookedModelLike, hook_name: str, run: Callable[[], Any], probe: nn.Module | None = None
) -> torch.Tensor:
    """``hook_name``'s activation on ``run()`` (which stops there), with ``probe``'s output replaced by markers."""
    store: dict[str, torch.Tensor] = {}

    def grab(v: torch.Tensor, hook: Any) -> None:
        store["v"] = v.detach().clone()
        raise _Captured

    def markers(_module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        index = torch.arange(out.shape[-1], dtype=torch.float64, device=out.device)
        return (OFFSET + index).expand(out.shape)

    handle = probe.register_forward_hook(markers, prepend=True) if probe is not None else None
    try:
        with bridge.hooks(fwd_hooks=[(hook_name, grab)]):
            run()
    except _Captured:
        pass
    finally:
        if handle is not None:
            handle.remove()
    if "v" not in store:
        raise WeightProcessingError(f"{hook_name} did not fire on a forward pass, so its value bias cannot be found")
    return store["v"]


def find_value_bias(bridge: HookedModelLike, layer: int, run: Callable[[], Any]) -> ValueBias | None:
    """Layer ``layer``'s value bias, or ``None`` when no biased projection feeds ``hook_v``."""
    attn = bridge.blocks[layer].attn
    hook_name = f"blocks.{layer}.attn.hook_v"
    baseline = _capture(bridge, hook_name, run)
    found: ValueBias | None = None
    for path, module in attn.hf.named_modules(prefix=f"blocks.{layer}.attn"):
        bias = getattr(module, "bias", None)
        if not isinstance(module, nn.Linear | Conv1D) or bias is None:
            continue
        v = _capture(bridge, hook_name, run, probe=module)  # [b, p, n, d]
        if v.dtype == baseline.dtype and torch.equal(v, baseline):
            continue
        index = v[0, 0] - OFFSET  # [n, d]
        exact = bool((v == v[:, :1]).all()) and bool((index == index.round()).all())
        if not exact or index.min() < 0 or index.max() >= bias.numel():
            raise WeightProcessingError(
                f"cannot fold the value bias of layer {layer}: hook_v is not a plain slice of {path}'s output "
                f"({type(module).__name__}; e.g. it is clamped or normalized first). Process without fold_value_biases."
            )
        if found is not None:
            raise WeightProcessingError(
                f"cannot fold the value bias of layer {layer}: both {found.path} and {path} feed hook_v"
            )
        found = ValueBias(path, module, index.round().long())
    return found
