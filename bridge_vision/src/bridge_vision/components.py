"""Vision-tower components: hook points on the patch embedding, the position embedding, and module outputs.

Each is given the hook point it fires (``hook=``, owned by the bridge or the tower), like core's ``Embedding``.
"""

from __future__ import annotations

from typing import Literal

import einops
import torch
from torch import nn

from bridge.components import Component, ForwardOverride, InputTap, OutputTap
from bridge.kernel import BridgeConfig, HookPoint


class PatchEmbedding(Component):
    """``hook`` on the patch embedding's output as ``[b, n_patches, d_model]`` (patches in row-major order).

    ``layout="conv"``: a ``Conv2d`` giving ``[b, d_model, grid_h, grid_w]`` (CLIP, SigLIP);
    ``layout="linear"``: a linear map of flattened patches giving ``[b, n_patches, d_model]`` (SigLIP 2)."""

    def __init__(
        self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint, layout: Literal["conv", "linear"] = "conv"
    ) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        fire = self._fire_conv if layout == "conv" else hook
        self.attach(OutputTap(hf_module, fire, (hook,)))

    def _fire_conv(self, grid: torch.Tensor) -> torch.Tensor:
        height = grid.shape[2]
        patches = self.hook(einops.rearrange(grid, "b d h w -> b (h w) d"))
        return einops.rearrange(patches, "b (h w) d -> b d h w", h=height)


class PositionEmbedding(Component):
    """``hook`` on the position embedding added to the patch (and CLS) embeddings, ``[b, p, d_model]``.

    ``source="table"``: the embeddings module looks up its ``position_embedding`` table once for the batch
    (``[1, p, d_model]``); the hook sees it repeated over the batch, so a patch may differ per image.
    ``source="resized"``: SigLIP 2 resizes the table to each image's patch grid (``[b, max_patches, d_model]``);
    the embeddings forward is re-expressed with the hook between the resizing and the sum."""

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        hook: HookPoint,
        source: Literal["table", "resized"] = "table",
    ) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        self._batch = 1
        if source == "table":
            self.attach(InputTap(hf_module, self._remember_batch, (hook,)))
            self.attach(OutputTap(hf_module.position_embedding, self._fire_table, (hook,)))
        else:
            self.attach(ForwardOverride(hf_module, self._resized_forward, (hook,)))

    def _remember_batch(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self._batch = pixel_values.shape[0]
        return pixel_values

    def _fire_table(self, table: torch.Tensor) -> torch.Tensor:
        return self.hook(einops.repeat(table[0], "p d -> b p d", b=self._batch))  # [1, p, d] -> [b, p, d]

    def _resized_forward(self, _original, pixel_values: torch.Tensor, spatial_shapes: torch.Tensor) -> torch.Tensor:
        hf = self.hf_module
        patches = hf.patch_embedding(pixel_values.to(dtype=hf.patch_embedding.weight.dtype))  # [b, max_patches, d]
        side = hf.position_embedding_size
        table = hf.position_embedding.weight.reshape(side, side, -1)  # [side, side, d]
        positions = hf.resize_positional_embeddings(table, spatial_shapes, max_length=pixel_values.shape[1])
        return patches + self.hook(positions)


class ModuleOutput(Component):
    """``hook`` on an HF module's output (a pooled output ``[b, d_model]``, a projection ``[b, d_proj]``)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        self.attach(OutputTap(hf_module, hook, (hook,)))


class ModuleInput(Component):
    """``hook`` on an HF module's first input (the pooled features a classifier or projection reads)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        self.attach(InputTap(hf_module, hook, (hook,)))
