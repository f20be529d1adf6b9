"""Vision-tower components: hook points on the patch embedding, the position embedding, and module outputs.

Each is given the hook point it fires (``hook=``, owned by the bridge or the tower), like core's ``Embedding``.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal

import einops
import torch
from torch import nn

from bridge.components import Component, ForwardOverride, InputTap, OutputTap, SequentialBlock, first_output
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
    """``hook`` on the position embedding added to the patch (and CLS) embeddings, ``[b, p, d_model]`` (repeated
    over the batch, so a patch may differ per image).

    ``source="table"`` (CLIP, SigLIP: an ``nn.Embedding`` ``position_embedding``) and ``source="parameter"`` (ViT,
    DINOv2: an ``nn.Parameter`` ``position_embeddings`` ``[1, p, d]``): the embeddings module adds either the table
    or, with ``interpolate_pos_encoding`` (always for DINOv2), the table resized to the image's patch grid by its
    ``interpolate_pos_encoding`` method; the hook sees whichever is added. While the hook is in use, the module's
    forward runs with that method standing in for the plain table, so HF's own code computes the sum
    (``checks_size``: HF refuses an image of another size without ``interpolate_pos_encoding``, and still does).
    ``source="resized"``: SigLIP 2 resizes the table to each image's patch grid (``[b, max_patches, d_model]``);
    the embeddings forward is re-expressed with the hook between the resizing and the sum.
    ``source="lookup"``: the ``position_embedding`` table looked up per image (Idefics3's bucketed positions of each
    image's patch grid), already ``[b, p, d_model]``: the hook is on the lookup's output.
    ``source="registers"``: DINOv2 with registers, whose register tokens (positions ``1 … r``, after CLS) get no
    position: their rows of the hook are zero, and a patch there adds to the register tokens."""

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        hook: HookPoint,
        source: Literal["table", "parameter", "resized", "registers", "lookup"] = "table",
        checks_size: bool = True,
    ) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        self.source = source
        self.checks_size = checks_size
        if source == "lookup":
            self.attach(OutputTap(hf_module.position_embedding, hook, (hook,)))
            return
        forward = {"resized": self._resized_forward, "registers": self._registers_forward}.get(
            source, self._interpolating_forward
        )
        self.attach(ForwardOverride(hf_module, forward, (hook,)))

    def _plain_table(self) -> torch.Tensor:
        """The table HF adds without interpolation, ``[1, p, d]``."""
        hf = self.hf_module
        if self.source == "table":
            return hf.position_embedding(hf.position_ids)
        return hf.position_embeddings

    def _interpolating_forward(self, original, pixel_values: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        hf = self.hf_module
        batch, height, width = pixel_values.shape[0], pixel_values.shape[-2], pixel_values.shape[-1]
        bound = inspect.signature(original).bind(pixel_values, *args, **kwargs)
        has_flag = "interpolate_pos_encoding" in inspect.signature(original).parameters
        interpolate = bool(bound.arguments.get("interpolate_pos_encoding")) or not has_flag
        if not interpolate and self.checks_size and (height, width) != _pair(hf.image_size):
            return original(*bound.args, **bound.kwargs)  # HF's own error for an image of another size
        method = hf.interpolate_pos_encoding

        def hooked(embeddings: torch.Tensor, h: int, w: int) -> torch.Tensor:
            table = method(embeddings, h, w) if interpolate else self._plain_table()  # [1, p, d]
            return self.hook(einops.repeat(table[0], "p d -> b p d", b=batch))

        if has_flag:
            bound.arguments["interpolate_pos_encoding"] = True  # the plain table comes through `hooked` too
        hf.__dict__["interpolate_pos_encoding"] = hooked
        try:
            return original(*bound.args, **bound.kwargs)
        finally:
            del hf.__dict__["interpolate_pos_encoding"]

    def _resized_forward(self, _original, pixel_values: torch.Tensor, spatial_shapes: torch.Tensor) -> torch.Tensor:
        hf = self.hf_module
        patches = hf.patch_embedding(pixel_values.to(dtype=hf.patch_embedding.weight.dtype))  # [b, max_patches, d]
        side = hf.position_embedding_size
        table = hf.position_embedding.weight.reshape(side, side, -1)  # [side, side, d]
        positions = hf.resize_positional_embeddings(table, spatial_shapes, max_length=pixel_values.shape[1])
        return patches + self.hook(positions)

    def _registers_forward(
        self, _original, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``Dinov2WithRegistersEmbeddings.forward`` with the positions hooked: ``[CLS | registers | patches]``
        plus ``[pos_CLS | 0 … 0 | pos_patches]`` (HF adds the positions before inserting the registers)."""
        hf = self.hf_module
        batch, _, height, width = pixel_values.shape
        patches = hf.patch_embeddings(pixel_values)  # [b, n_patches, d]
        if bool_masked_pos is not None:
            mask_token = hf.mask_token.to(patches.dtype).unsqueeze(0)
            patches = torch.where(bool_masked_pos.unsqueeze(-1), mask_token, patches)
        embeddings = torch.cat((hf.cls_token.expand(batch, -1, -1), patches), dim=1)  # [b, 1 + n_patches, d]
        table = hf.interpolate_pos_encoding(embeddings, height, width)  # [1, 1 + n_patches, d]
        registers = hf.register_tokens.expand(batch, -1, -1)  # [b, r, d]
        zeros = table.new_zeros(1, registers.shape[1], table.shape[-1])
        table = torch.cat((table[:, :1], zeros, table[:, 1:]), dim=1)  # [1, 1 + r + n_patches, d]
        positions = self.hook(einops.repeat(table[0], "p d -> b p d", b=batch))
        tokens = torch.cat((embeddings[:, :1], registers, embeddings[:, 1:]), dim=1)
        return hf.dropout(tokens + positions)


def _pair(size: Any) -> tuple[int, int]:
    return (size[0], size[1]) if isinstance(size, list | tuple) else (size, size)


class ModuleOutput(Component):
    """``hook`` on an HF module's output (a pooled output ``[b, d_model]``, a projection ``[b, d_proj]``)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        self.attach(OutputTap(hf_module, hook, (hook,)))


class MethodOutput(Component):
    """``hook`` on what a method of an HF module returns while the module runs: the ``field`` of its output object
    (a model's ``get_image_features``' ``pooler_output``, the image tokens as the language model receives them).
    A tensor is hooked as it is; a list or tuple of per-image tensors ``[n_i, d]`` as one ``[1, Σ n_i, d]`` (every
    image's rows in order) and split back. While the hook is in use the module's forward runs with the method
    wrapped (an instance attribute for the duration of the call), so HF's own code computes everything else."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint, method: str, field: str) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        self.method = method
        self.field = field
        self.attach(ForwardOverride(hf_module, self._forward, (hook,)))

    def _forward(self, original, *args: Any, **kwargs: Any) -> Any:
        hf = self.hf_module
        method = getattr(hf, self.method)

        def hooked(*method_args: Any, **method_kwargs: Any) -> Any:
            out = method(*method_args, **method_kwargs)
            setattr(out, self.field, self._fire(getattr(out, self.field)))
            return out

        hf.__dict__[self.method] = hooked
        try:
            return original(*args, **kwargs)
        finally:
            del hf.__dict__[self.method]

    def _fire(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return self.hook(value)
        sizes = [len(part) for part in value]
        rows = self.hook(torch.cat(list(value))[None])[0]  # [Σ n_i, d]
        return type(value)(torch.split(rows, sizes))


class ModuleInput(Component):
    """``hook`` on an HF module's first input (the pooled features a classifier or projection reads)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        self.attach(InputTap(hf_module, hook, (hook,)))


class ParameterScaleBlock(SequentialBlock):
    """Pre-norm with a per-channel scale held by the HF block as parameters (InternViT's ``lambda_1``/``lambda_2``):
    ``hook_attn_out = lambda_1 · attn(ln1(pre))``, ``hook_mlp_out = lambda_2 · dropout(mlp(ln2(mid)))``."""

    sublayer_output_modules: ClassVar[dict[str, tuple[str, ...]]] = {"attn": ("lambda_1",), "mlp": ("lambda_2",)}

    def run_attention(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        out, weights = super().run_attention(x, call_kwargs)
        return self.hf_module.lambda_1 * out, weights

    def run_mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf_module.lambda_2 * super().run_mlp(x)


class LayerScaleBlock(SequentialBlock):
    """Pre-norm with a per-channel scale on each sublayer's output before the residual sum (DINOv2's
    ``layer_scale1``/``layer_scale2``, then its stochastic-depth ``drop_path``, the identity in eval):
    ``hook_attn_out = scale1(attn(ln1(pre)))``, ``hook_mlp_out = scale2(mlp(ln2(mid)))``. Block paths:
    ``attn_scale``, ``mlp_scale`` and ``drop_path``."""

    sublayer_output_modules: ClassVar[dict[str, tuple[str, ...]]] = {"attn": ("attn_scale",), "mlp": ("mlp_scale",)}

    def run_attention(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        result = self.hf_modules["attn"](x, **call_kwargs)
        weights = result[1] if isinstance(result, tuple | list) and len(result) > 1 else None
        return self.hf_modules["drop_path"](self.hf_modules["attn_scale"](first_output(result))), weights

    def run_mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf_modules["drop_path"](self.hf_modules["mlp_scale"](first_output(self.hf_modules["mlp"](x))))
