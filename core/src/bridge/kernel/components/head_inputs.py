"""Per-head attention inputs: ``hook_attn_in`` and ``hook_q_input``/``hook_k_input``/``hook_v_input``.

A block's attention normally projects one input ``ln1(resid_pre)`` for all heads. While one of
these opt-in hook points has a hook, the residual entering ``ln1`` is repeated per head
(``[b, p, heads, d_model]``) and fired; each head's copy goes through ``ln1`` (the HF module's own
code) and that head's slice of the q/k/v projection weights, so a patch to head ``h``'s input
changes head ``h``'s query (key, value) alone. The projection modules' outputs are replaced by the
per-head results; the residual stream itself is untouched.

With grouped-query attention, ``hook_attn_in`` has one input per query head; key/value head ``j``
reads the input of the first query head of its group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import einops
import torch
from torch import nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

from bridge.kernel.components.base import Attachment, ForwardOverride, InputTap, OutputTap
from bridge.kernel.hook_points import HookPoint

#: One output column block of a projection module: (``"q"``/``"k"``/``"v"``, head index, columns).
ColumnBlock = tuple[str, int, slice]
#: HF projection module path (relative to the attention module) → its output column blocks, in order.
ProjectionLayout = dict[str, list[ColumnBlock]]


def project_columns(module: nn.Module, x: torch.Tensor, columns: slice) -> torch.Tensor:
    """The output columns ``columns`` of a linear layer (``nn.Linear`` or HF ``Conv1D``) on ``x`` ``[..., d_in]``."""
    bias = getattr(module, "bias", None)
    bias = bias[columns] if bias is not None else None
    if isinstance(module, Conv1D):
        flat = x.reshape(-1, x.shape[-1])  # [..., d_in] -> [N, d_in], as Conv1D computes
        weight = module.weight[:, columns]
        out = torch.addmm(bias, flat, weight) if bias is not None else flat @ weight
        return out.reshape(*x.shape[:-1], out.shape[-1])
    return F.linear(x, module.weight[columns], bias)


class HeadInputs:
    """The per-head input machinery of one block: owns no hook points, fires the block's."""

    def __init__(
        self,
        ln1: nn.Module,
        attn_module: nn.Module,
        layout: ProjectionLayout,
        n_heads: int,
        n_kv_heads: int,
        hooks: dict[str, HookPoint],
    ) -> None:
        self.ln1 = ln1
        self.attn_module = attn_module
        self.layout = layout
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.hooks = hooks  # attn_in, q_input, k_input, v_input
        self.pending: dict[str, torch.Tensor] | None = None

    def attachments(self) -> list[Attachment]:
        hooks = tuple(self.hooks.values())
        out: list[Attachment] = [InputTap(self.ln1, self._split, hooks)]
        for path, blocks in self.layout.items():
            module = self.attn_module.get_submodule(path)
            out.append(ForwardOverride(module, self._projection(module, blocks), hooks))
        out.append(OutputTap(self.attn_module, self._done, hooks))
        return out

    def _split(self, resid: torch.Tensor) -> torch.Tensor:
        """Fire the input hooks on ``resid`` ``[b, p, d_model]`` and keep each head's normalized input."""
        attn_in = self.hooks["attn_in"](einops.repeat(resid, "b p d -> b p n d", n=self.n_heads))
        firsts = torch.arange(0, self.n_heads, self.n_heads // self.n_kv_heads, device=resid.device)
        k_in, v_in = attn_in[:, :, firsts], attn_in[:, :, firsts]  # copies [b, p, n_kv_heads, d_model]
        inputs = {
            "q": self.hooks["q_input"](attn_in),
            "k": self.hooks["k_input"](k_in),
            "v": self.hooks["v_input"](v_in),
        }
        norm = type(self.ln1).forward  # the HF code, without bridge overrides or torch hooks
        self.pending = {kind: norm(self.ln1, x) for kind, x in inputs.items()}  # [b, p, heads, d_model]
        return resid

    def _projection(self, module: nn.Module, blocks: list[ColumnBlock]) -> Callable[..., torch.Tensor]:
        def project(original: Callable[..., torch.Tensor], x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if self.pending is None:
                return original(x, *args, **kwargs)
            parts = [project_columns(module, self.pending[kind][:, :, head], cols) for kind, head, cols in blocks]
            return torch.cat(parts, dim=-1)  # [b, p, d_out] in the module's own column order

        return project

    def _done(self, output: Any) -> Any:
        self.pending = None
        return output
