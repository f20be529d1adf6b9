"""Layer norm and RMS norm with ``hook_scale`` and ``hook_normalized``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from bridge.components.base import Component, ForwardOverride
from bridge.config import BridgeConfig
from bridge.hook_points import HookPoint


def norm_epsilon(module: nn.Module) -> float:
    """The epsilon an HF norm module uses, whatever it calls it."""
    for name in ("eps", "variance_epsilon", "epsilon", "layer_norm_eps"):
        value = getattr(module, name, None)
        if isinstance(value, float | int):
            return float(value)
    raise AttributeError(f"cannot find the epsilon of {type(module).__name__}")


#: HF RMS norms that multiply by the weight in float32 and cast afterwards (most cast first).
_WEIGHT_IN_FLOAT32 = frozenset({"Olmo2RMSNorm"})


class Norm(Component):
    """A normalization layer. Hooks: ``hook_scale`` ``[b, p, 1]``, ``hook_normalized`` ``[b, p, d]``.

    ``kind="LN"`` is ``(x - mean) / scale * w + b`` with ``scale = sqrt(var + eps)``;
    ``kind="RMS"`` is ``x / scale * (w + weight_offset)`` with ``scale = sqrt(mean(x²) + eps)``.
    Both are computed in float32 with HF's numerics, so a hooked norm gives HF's output bit for bit in
    half precision too: LN casts once at the end (as torch's layer norm does inside), RMS casts
    before the weight (Llama-style) or after it (``weight_in_float32``; automatic for Gemma's
    ``1 + w`` and for the HF classes in ``_WEIGHT_IN_FLOAT32``). The hooks see float32 tensors.
    """

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        kind: Literal["LN", "RMS"] = "LN",
        weight_offset: float = 0.0,
        weight_in_float32: bool | None = None,
    ) -> None:
        super().__init__(hf_module)
        self.kind = kind
        self.weight_offset = weight_offset
        if weight_in_float32 is None:
            weight_in_float32 = bool(weight_offset) or type(hf_module).__name__ in _WEIGHT_IN_FLOAT32
        self.weight_in_float32 = weight_in_float32
        self.eps = norm_epsilon(hf_module)
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()
        self.attach(ForwardOverride(hf_module, self._hooked_forward, (self.hook_scale, self.hook_normalized)))

    def _normalized(self, centred: torch.Tensor, mean_square: torch.Tensor) -> torch.Tensor:
        """``centred / hook_scale(sqrt(mean_square + eps))``, computed as HF does (times ``rsqrt``) unless
        a hook changed the scale. float32 ``[b, p, d]``, ``[b, p, 1]`` → ``[b, p, d]``."""
        rstd = torch.rsqrt(mean_square + self.eps)
        scale = rstd.reciprocal()
        version = scale._version
        hooked = self.hook_scale(scale)
        if hooked is not scale or scale._version != version:
            rstd = hooked.reciprocal()
        elif hooked.requires_grad:  # the value of rstd, the gradient through the (hookable) scale
            inverse = hooked.reciprocal()
            rstd = rstd.detach() + (inverse - inverse.detach())
        return self.hook_normalized(centred * rstd)

    def _hooked_forward(self, _original, x: torch.Tensor) -> torch.Tensor:
        weight = getattr(self.hf, "weight", None)
        bias = getattr(self.hf, "bias", None)
        x32 = x.float()
        if self.kind == "LN":
            centred = x32 - x32.mean(-1, keepdim=True)
            out = self._normalized(centred, centred.pow(2).mean(-1, keepdim=True))
            if weight is not None:
                out = out * weight.float()
            if bias is not None:
                out = out + bias.float()
            return out.to(x.dtype)
        normalized = self._normalized(x32, x32.pow(2).mean(-1, keepdim=True))
        if weight is None:
            return normalized.to(x.dtype)
        if self.weight_in_float32:
            return (normalized * (self.weight_offset + weight.float())).to(x.dtype)
        return weight * normalized.to(x.dtype)
