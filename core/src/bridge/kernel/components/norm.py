"""Layer norm and RMS norm with ``hook_scale`` and ``hook_normalized``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from bridge.kernel.components.base import Component, ForwardOverride
from bridge.kernel.components.weight_views import NormWeights
from bridge.kernel.config import BridgeConfig
from bridge.kernel.errors import ComponentMapError
from bridge.kernel.hook_points import HookPoint


def norm_epsilon(module: nn.Module) -> float:
    """The epsilon an HF norm module uses, whatever it calls it."""
    for name in ("eps", "variance_epsilon", "epsilon", "layer_norm_eps"):
        value = getattr(module, name, None)
        if isinstance(value, float | int):
            return float(value)
    raise AttributeError(f"cannot find the epsilon of {type(module).__name__}")


#: HF RMS norms that multiply by the weight in float32 and cast afterwards (most cast first).
_WEIGHT_IN_FLOAT32 = frozenset({"Olmo2RMSNorm"})


class Norm(NormWeights, Component):
    """A normalization layer. Hooks: ``hook_scale`` ``[b, p, 1]``, ``hook_normalized`` ``[b, p, d]``.

    ``kind="LN"`` is ``(x - mean) / scale * (w + weight_offset) + b`` with ``scale = sqrt(var + eps)``;
    ``kind="RMS"`` is ``x / scale * (w + weight_offset)`` with ``scale = sqrt(mean(x²) + eps)``.
    ``weight_offset``: what the HF norm adds to its stored weight (Gemma's RMS norm and Nemotron's ``LayerNorm1P``
    scale by ``1 + w``: ``weight_offset=1.0``); the weight views and weight processing add it too.
    While the hooks only observe, the module's output is the HF module's own (bit for bit, in any
    dtype; gradients flow through the hooked tensors). Once a hook changes a tensor, the output is
    this re-expression in float32 with HF's rounding points: LN casts once at the end (as torch's
    layer norm does inside), RMS casts before the weight (Llama-style) or after it
    (``weight_in_float32``; automatic for Gemma's ``1 + w`` and the HF classes in
    ``_WEIGHT_IN_FLOAT32``). The hooks see float32 tensors. ``eps``: for HF norms that hard-code their
    epsilon instead of keeping it on the module (OLMo's non-parametric layer norm).

    Options the component would ignore are refused (``ComponentMapError``): a ``kind`` other than ``"LN"`` or
    ``"RMS"``, and ``weight_in_float32`` on a layer norm (which always applies its weight in float32).
    Parameters as TransformerLens names them: ``w`` (the effective scale) and ``b`` (layer norms only).
    """

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        kind: Literal["LN", "RMS"] = "LN",
        weight_offset: float = 0.0,
        weight_in_float32: bool | None = None,
        eps: float | None = None,
    ) -> None:
        super().__init__(hf_module)
        if kind not in ("LN", "RMS"):
            raise ComponentMapError(
                f"Norm: kind={kind!r} is not a norm bridge knows; use 'LN' (layer norm: centred, then scaled) or "
                "'RMS' (scaled by the root mean square)"
            )
        if kind == "LN" and weight_in_float32 is not None:
            raise ComponentMapError(
                "Norm: weight_in_float32 applies to RMS norms only (a layer norm applies its weight in float32, as "
                "torch's layer_norm does); leave it out for kind='LN'"
            )
        self.kind = kind
        self.weight_offset = float(weight_offset)
        if weight_in_float32 is None:
            weight_in_float32 = bool(weight_offset) or type(hf_module).__name__ in _WEIGHT_IN_FLOAT32
        self.weight_in_float32 = weight_in_float32
        self.eps = norm_epsilon(hf_module) if eps is None else eps
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()
        self.attach(ForwardOverride(hf_module, self._hooked_forward, (self.hook_scale, self.hook_normalized)))

    def _normalized(self, centred: torch.Tensor, mean_square: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """``centred / hook_scale(sqrt(mean_square + eps))`` through ``hook_normalized``, computed as HF does
        (times ``rsqrt``) unless a hook changed the scale; and whether both hooks left their tensor as is.
        float32 ``[b, p, d]``, ``[b, p, 1]`` → ``[b, p, d]``."""
        rstd = torch.rsqrt(mean_square + self.eps)
        scale = rstd.reciprocal()
        hooked, untouched = _fire(self.hook_scale, scale)
        if not untouched:
            rstd = hooked.reciprocal()
        elif hooked.requires_grad:  # the value of rstd, the gradient through the (hookable) scale
            inverse = hooked.reciprocal()
            rstd = rstd.detach() + (inverse - inverse.detach())
        normalized, normalized_untouched = _fire(self.hook_normalized, centred * rstd)
        return normalized, untouched and normalized_untouched

    def _hooked_forward(self, original, x: torch.Tensor) -> torch.Tensor:
        """The norm re-expressed with its hooks. While the hooks only observe, the value is the HF module's
        own output (bit for bit, in any dtype) and the gradient flows through the hooked tensors; the
        weight and bias are then applied only when a gradient needs the re-expression."""
        normalized, untouched = self._normalize(x)
        if untouched and not normalized.requires_grad:
            return original(x)
        out = self._affine(normalized, x.dtype)
        if not untouched:
            return out
        exact = original(x)
        return exact.detach() + (out - out.detach()).to(exact.dtype)

    def _normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The hooked, float32 normalized input ``[b, p, d]`` (centred first for LN), before any weight."""
        x32 = x.float()
        if self.kind == "LN":
            centred = x32 - x32.mean(-1, keepdim=True)
            return self._normalized(centred, centred.pow(2).mean(-1, keepdim=True))
        return self._normalized(x32, x32.pow(2).mean(-1, keepdim=True))

    def _affine(self, normalized: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``normalized`` times the weight (plus the bias), rounded to ``dtype`` where HF's class rounds."""
        weight = getattr(self.hf, "weight", None)
        bias = getattr(self.hf, "bias", None)
        if self.kind == "LN":
            out = normalized
            if weight is not None:
                out = out * (weight.float() + self.weight_offset)
            if bias is not None:
                out = out + bias.float()
            return out.to(dtype).contiguous()  # torch's layer norm returns a contiguous tensor whatever its input
        if weight is None:
            return normalized.to(dtype)
        if self.weight_in_float32:
            return (normalized * (self.weight_offset + weight.float())).to(dtype)
        if self.weight_offset:
            return (self.weight_offset + weight) * normalized.to(dtype)
        return weight * normalized.to(dtype)


def _fire(hook: HookPoint, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Run ``hook`` on ``x``; also say whether its hooks left ``x`` as it was (not replaced, not changed in place)."""
    version = x._version
    out = hook(x)
    return out, out is x and x._version == version
