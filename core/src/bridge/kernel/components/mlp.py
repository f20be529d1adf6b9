"""Dense MLPs: plain (``in → act → out``) and gated (``act(gate) * up → down``)."""

from __future__ import annotations

from torch import nn

from bridge.kernel.components.base import Component, InputTap, OutputTap
from bridge.kernel.components.weight_views import CoreMLPWeights
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
