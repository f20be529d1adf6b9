"""Falcon-H1's MLP: a gated MLP with µP multipliers on its gate's input to the activation and on its output."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bridge.components import MLP, Component, ForwardOverride, InputTap
from bridge.kernel import BridgeConfig, HookPoint


class ScaledGateMLP(MLP):
    """HF ``FalconH1MLP``: ``down_proj(up_proj(x) · act(gate_proj(x) · m_gate)) · m_down``.

    Hooks ``[b, p, d_mlp]``: ``hook_pre`` (``gate_proj(x) · m_gate``, what the activation reads), ``hook_pre_linear``
    (``up_proj(x)``), ``hook_post`` (``down_proj``'s input), so ``hook_post = act(hook_pre) · hook_pre_linear`` as in
    every gated MLP; ``W_gate``/``b_gate`` are ``gate_proj``'s times ``m_gate`` (a scaled copy), ``W_out`` is
    ``down_proj``'s own (the block's ``hook_mlp_out`` is after ``m_down``)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        Component.__init__(self, hf_module)
        self.paths = {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"}
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()
        self.attach(ForwardOverride(hf_module, self._hooked_forward, (self.hook_pre, self.hook_pre_linear)))
        self.attach(InputTap(hf_module.down_proj, self.hook_post, (self.hook_post,)))

    def _hooked_forward(self, _original: Callable, x: torch.Tensor) -> torch.Tensor:
        m = self.hf
        gate = self.hook_pre(m.gate_proj(x) * m.gate_multiplier)
        return m.down_proj(self.hook_pre_linear(m.up_proj(x)) * m.act_fn(gate)) * m.down_multiplier

    def mlp_projections(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        w_in, w_gate, w_out = super().mlp_projections()
        return w_in, None if w_gate is None else w_gate * self.hf.gate_multiplier, w_out

    def mlp_biases(self) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        b_in, b_gate, b_out = super().mlp_biases()
        return b_in, None if b_gate is None else b_gate * self.hf.gate_multiplier, b_out
