"""What is special to the RoPE family: a fused gate/up projection, norms after sublayers. (Its q/k-norm attention
is core's ``QKNormAttention``, re-exported here.)"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bridge.components import (
    Block,
    Component,
    InputTap,
    MLPWeights,
    NormLayout,
    OutputTap,
    QKNormAttention,
    linear_bias,
    linear_in_out,
)
from bridge.kernel import BridgeConfig, HookPoint

__all__ = ["GateUpMLP", "NormLayout", "QKNormAttention", "SandwichBlock"]


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


class SandwichBlock(Block):
    """Norms after each sublayer, and optionally before it (Gemma 2/3: both; OLMo-2: after only).

    ``attn_out = ln1_post(attn(ln1(resid_pre)))``, ``resid_mid = resid_pre + attn_out``,
    ``mlp_out = ln2_post(mlp(ln2(resid_mid)))``, ``resid_post = resid_mid + mlp_out``: ``hook_attn_out`` and
    ``hook_mlp_out`` are what is added to the residual stream, after the post-norms. Children ``ln1``/``ln2``
    are optional (absent for OLMo-2); ``ln1_post``/``ln2_post`` are required.
    """

    block_hooks = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
    algebra = (
        ("hook_resid_mid", ("hook_resid_pre", "hook_attn_out")),
        ("hook_resid_post", ("hook_resid_mid", "hook_mlp_out")),
    )

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> torch.Tensor:
        resid_pre = self.hook_resid_pre(hidden)
        attn, _weights = self.run_attention(self.run_norm("ln1", resid_pre), call_kwargs)
        attn_out = self.hook_attn_out(self.run_norm("ln1_post", attn))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.run_norm("ln2_post", self.run_mlp(self.run_norm("ln2", resid_mid))))
        return self.hook_resid_post(resid_mid + mlp_out)
