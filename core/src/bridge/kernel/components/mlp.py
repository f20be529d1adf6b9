"""Dense MLPs: plain (``in → act → out``), gated (``act(gate) * up → down``), and gated with one fused
``[gate | up]`` projection."""

from __future__ import annotations

import torch
from torch import nn

from bridge.kernel.components.base import Component, InputTap, OutputTap
from bridge.kernel.components.weight_views import CoreMLPWeights, MLPWeights, linear_bias, linear_in_out
from bridge.kernel.config import BridgeConfig
from bridge.kernel.hook_points import HookPoint


class MLP(CoreMLPWeights, Component):
    """Hooks ``hook_pre`` (output of ``pre``), ``hook_post`` (input of ``out``) and, for gated
    MLPs, ``hook_pre_linear`` (output of ``pre_linear``); all ``[b, p, d_mlp]``.

    The hooks sit on the HF submodules' own inputs and outputs, so the HF forward runs
    unchanged and a patch flows on exactly as if the model had computed it.
    """

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        pre: str,
        out: str,
        pre_linear: str | None = None,
    ) -> None:
        super().__init__(hf_module)
        self.paths = {"pre": pre, "pre_linear": pre_linear, "out": out}
        self.hook_pre = HookPoint()
        self.attach(OutputTap(hf_module.get_submodule(pre), self.hook_pre, (self.hook_pre,)))
        if pre_linear is not None:
            self.hook_pre_linear = HookPoint()
            self.attach(OutputTap(hf_module.get_submodule(pre_linear), self.hook_pre_linear, (self.hook_pre_linear,)))
        self.hook_post = HookPoint()
        self.attach(InputTap(hf_module.get_submodule(out), self.hook_post, (self.hook_post,)))


class GateUpMLP(MLPWeights, Component):
    """A gated MLP with one fused ``[gate | up]`` projection (Phi-3's ``gate_up_proj``).

    Hooks, all ``[b, p, d_mlp]``: ``hook_pre`` (the gate half, before the activation), ``hook_pre_linear``
    (the up half) and ``hook_post`` (``act(gate) * up``, the input of the output projection) — the names of
    core's ``MLP`` for split gate/up projections. Weight views: ``W_gate``/``W_in`` are the two halves of the
    fused projection's columns.
    """

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, fused: str, out: str) -> None:
        super().__init__(hf_module)
        self.paths = {"fused": fused, "out": out}
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()
        self.attach(OutputTap(hf_module.get_submodule(fused), self._split, (self.hook_pre, self.hook_pre_linear)))
        self.attach(InputTap(hf_module.get_submodule(out), self.hook_post, (self.hook_post,)))

    def mlp_projections(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        fused = linear_in_out(self.hf_module.get_submodule(self.paths["fused"]))  # [d_model, 2·d_mlp]
        gate, up = fused.chunk(2, dim=-1)  # [d_model, d_mlp] ×2
        return up, gate, linear_in_out(self.hf_module.get_submodule(self.paths["out"]))

    def mlp_biases(self) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        fused = linear_bias(self.hf_module.get_submodule(self.paths["fused"]))
        gate, up = fused.chunk(2) if fused is not None else (None, None)
        return up, gate, linear_bias(self.hf_module.get_submodule(self.paths["out"]))

    def _split(self, fused: torch.Tensor) -> torch.Tensor:
        gate, up = fused.chunk(2, dim=-1)  # [b, p, 2·d_mlp] -> 2 × [b, p, d_mlp]
        return torch.cat((self.hook_pre(gate), self.hook_pre_linear(up)), dim=-1)
