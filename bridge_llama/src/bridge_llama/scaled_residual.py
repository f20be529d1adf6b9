"""A pre-norm block whose sublayer outputs are scaled before they join the residual stream (Granite)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bridge.components import Component, SequentialBlock
from bridge.config import BridgeConfig


class ScaledResidualBlock(SequentialBlock):
    """``mid = pre + m · attn(ln1(pre))``, ``post = mid + m · mlp(ln2(mid))`` with ``m`` the HF block's
    ``residual_multiplier``.

    ``hook_attn_out`` and ``hook_mlp_out`` ``[b, p, d_model]`` are what is added to the stream, after the
    multiplier, so ``resid_mid = resid_pre + attn_out`` holds as in every block; the attention's own output
    is ``hook_attn_out / m`` (``attn.hook_z`` and ``W_O`` give it unscaled).
    """

    def __init__(
        self, hf_module: nn.Module, cfg: BridgeConfig, children: dict[str, Component], paths: dict[str, str]
    ) -> None:
        super().__init__(hf_module, cfg, children, paths)
        #: the factor on each sublayer's output before the residual sum (read by the conformance kit)
        self.residual_multiplier = float(hf_module.residual_multiplier)

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        m = self.residual_multiplier
        resid_pre = self.hook_resid_pre(hidden)
        attn, weights = self.run_attention(self.run_norm("ln1", resid_pre), call_kwargs)
        attn_out = self.hook_attn_out(attn * m)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.run_mlp(self.run_norm("ln2", resid_mid)) * m)
        return self.block_output(self.hook_resid_post(resid_mid + mlp_out), weights)
