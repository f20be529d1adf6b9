"""The unembedding (``model.unembed``): the HF LM head, with TransformerLens's ``W_U`` and ``b_U``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bridge.kernel.components.base import Component
from bridge.kernel.components.weight_views import UnembedWeights
from bridge.kernel.config import BridgeConfig


class Unembed(UnembedWeights, Component):
    """Wraps the HF head module (``lm_head``, a classifier): ``unembed(x)`` is the head's output times the
    model's logit scale (``cfg.extra["logit_scale"]``, where the model multiplies its logits after the head),
    which is ``x @ W_U + b_U``. ``weight`` and ``bias`` are the HF head's own parameters; it has no hook points."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module)
        self.cfg = cfg

    @property
    def logit_scale(self) -> float | None:
        """The factor the model multiplies its head's output by (``cfg.extra["logit_scale"]``), or None."""
        scale = self.cfg.extra.get("logit_scale")
        return None if scale is None else float(scale)

    @property
    def weight(self) -> torch.Tensor:
        """The HF head's weight ``[d_vocab, d_model]``."""
        weight = self.hf.weight
        assert isinstance(weight, torch.Tensor)
        return weight

    @property
    def bias(self) -> Any:
        """The HF head's bias ``[d_vocab]``, or None."""
        return getattr(self.hf, "bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_model]`` → ``[..., d_vocab]``."""
        out = self.hf(x)
        return out if self.logit_scale is None else out * self.logit_scale

    def _layer_label(self) -> str:
        return "unembed"
