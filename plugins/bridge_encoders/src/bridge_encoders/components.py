"""Components of the encoder family: hook taps on a head's input or output, and the masked-LM head."""

from __future__ import annotations

import torch
from torch import nn

from bridge.components import Component, ForwardOverride, InputTap, Norm, OutputTap
from bridge.kernel import BridgeConfig, HookPoint


class ModuleOutput(Component):
    """Fires ``hook`` (a hook point of the map: ``hook_pooled``…) on the HF module's output."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint) -> None:
        super().__init__(hf_module)
        self.attach(OutputTap(hf_module, hook, (hook,)))


class ModuleInput(Component):
    """Fires ``hook`` on the HF module's first input (a classifier's pooled input)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint) -> None:
        super().__init__(hf_module)
        self.attach(InputTap(hf_module, hook, (hook,)))


class MLMHead(Component):
    """The transform of a masked-LM head before its decoder (the unembedding): ``dense → act → norm``.

    Hooks, all ``[b, p, d_model]``: ``hook_pre`` (the dense projection's output), ``hook_post`` (after the
    activation: the norm's input), and the norm's ``ln.hook_scale`` ``[b, p, 1]`` and ``ln.hook_normalized``.
    ``dense`` and ``norm`` are paths relative to the HF module holding them (the activation may be a function,
    RoBERTa's ``gelu``, so its output is seen as the norm's input).
    """

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, dense: str, norm: str) -> None:
        super().__init__(hf_module)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()
        self.ln = Norm(hf_module.get_submodule(norm), cfg)
        self.attach(OutputTap(hf_module.get_submodule(dense), self.hook_pre, (self.hook_pre,)))
        self.attach(InputTap(hf_module.get_submodule(norm), self.hook_post, (self.hook_post,)))


class BatchedPositions(Component):
    """Fires ``hook`` (``hook_pos_embed``) on a learned position embedding's output ``[b, p, d_model]``, batched:
    BART's decoder embeds one row of positions ``[1, p, d]`` for the whole batch, which the hook sees expanded
    to the batch of the tokens the module was given (the sum HF computes is the same)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        self.attach(ForwardOverride(hf_module, self._batched, (hook,)))

    def _batched(self, original, input_ids, *args, **kwargs):
        out = original(input_ids, *args, **kwargs)
        if out.ndim == 3 and out.shape[0] == 1 and input_ids.shape[0] > 1:
            out = out.expand(input_ids.shape[0], -1, -1)  # [1, p, d] -> [b, p, d]
        return self.hook(out)


class FusedGatedMLP(Component):
    """A gated MLP whose input and gate come from one fused projection (ModernBERT's ``Wi``: ``[input | gate]``,
    ``out = Wo(act(input) * gate)``). Hooks ``[b, p, d_mlp]``: ``hook_pre`` (the input half, before the
    activation), ``hook_pre_linear`` (the gate half) and ``hook_post`` (``Wo``'s input)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, fused: str, out: str) -> None:
        super().__init__(hf_module)
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()
        hooks = (self.hook_pre, self.hook_pre_linear)
        self.attach(OutputTap(hf_module.get_submodule(fused), self._split_fire, hooks))
        self.attach(InputTap(hf_module.get_submodule(out), self.hook_post, (self.hook_post,)))

    def _split_fire(self, fused: torch.Tensor) -> torch.Tensor:
        pre, gate = fused.chunk(2, dim=-1)  # [b, p, 2 * d_mlp] -> 2 x [b, p, d_mlp]
        return torch.cat((self.hook_pre(pre), self.hook_pre_linear(gate)), dim=-1)
