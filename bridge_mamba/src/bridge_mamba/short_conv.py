"""LFM2's gated short convolution, re-expressed with hook points (under ``mixer``).

HF's layer projects ``[B | C | x]``, convolves ``B · x`` causally over a few positions (reading ``conv.weight``
in functional code) and gates the result with ``C``. While one of its inner hooks is in use the HF forward is
replaced by the same steps, built from its modeling file's own functions; ``hook_in_proj`` is an output tap.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from bridge.components import Component, ForwardOverride, OutputTap
from bridge.kernel import BridgeConfig, HookPoint

INNER_HOOKS = ("hook_B", "hook_C", "hook_x", "hook_conv_in", "hook_conv", "hook_y")


class ShortConv(Component):
    """HF ``Lfm2ShortConv`` / ``Lfm2MoeShortConv``; ``d`` = ``d_model``, all ``[b, p, …]``:

    - ``hook_in_proj`` ``[b, p, 3d]``: ``in_proj``'s output ``[B | C | x]``;
    - ``hook_B``, ``hook_C``, ``hook_x`` ``[b, p, d]``: the input gate, the output gate and the value;
    - ``hook_conv_in`` ``[b, p, d]``: ``B · x``, what the convolution reads;
    - ``hook_conv`` ``[b, p, d]``: the causal depthwise convolution over the last ``conv_L_cache`` positions (no
      activation), trimmed to the sequence;
    - ``hook_y`` ``[b, p, d]``: ``C · conv``, ``out_proj``'s input.

    The layer's output (``out_proj``) is the block's ``hook_mixer_out``. Its only state is the convolution's window
    (HF's conv cache), so it has no recurrent state hook.
    """

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module)
        self.hook_in_proj = HookPoint()
        self.attach(OutputTap(hf_module.in_proj, self.hook_in_proj, (self.hook_in_proj,)))
        for name in INNER_HOOKS:
            setattr(self, name, HookPoint())
        self.attach(ForwardOverride(hf_module, self._hooked_forward, tuple(getattr(self, n) for n in INNER_HOOKS)))

    def _hooked_forward(
        self,
        _original: Any,
        hidden_states: torch.Tensor,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        m, fns = self.hf, sys.modules[type(self.hf).__module__]
        seq_len = hidden_states.shape[1]
        hidden_states = fns.apply_mask_to_padding_states(hidden_states, attention_mask)
        B, C, x = m.in_proj(hidden_states).chunk(3, dim=-1)  # [b, p, d] each
        B, C, x = self.hook_B(B), self.hook_C(C), self.hook_x(x)
        conv_in = self.hook_conv_in(B * x).transpose(1, 2)  # [b, d, p], as HF convolves
        conv_state = past_key_values.get_conv_state(m.layer_idx, state_idx=0) if past_key_values is not None else None
        weight = m.conv.weight.squeeze(1)
        if conv_state is not None and seq_len == 1 and not past_key_values.is_recording_past(m.layer_idx):
            conv = fns.causal_conv1d_update(conv_in, conv_state, weight, m.conv.bias)
        else:
            if past_key_values is not None:
                conv_in = past_key_values.update_conv_state(conv_in, m.layer_idx, conv_kernel_size=m.conv_kernel_size)
            conv = fns.causal_conv1d_fn(conv_in, weight, m.conv.bias, **kwargs)
            if past_key_values is not None:
                conv = conv[:, :, -seq_len:]
        conv = self.hook_conv(conv.transpose(1, 2))  # [b, p, d]
        y = self.hook_y(C * conv)
        return m.out_proj(y.contiguous())
