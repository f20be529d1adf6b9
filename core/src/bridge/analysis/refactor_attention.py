"""``refactor_factored_attn_matrices``: rewrite each head's q/k/v/o weights into an SVD-even factorisation.

Only the products ``W_Q W_Kᵀ`` (with the biases, as a bilinear form) and ``W_V W_O`` determine a head, so they can
be refactored without changing the model (TransformerLens's ``refactor_factored_attn_matrices``):

- ``QK``: with ``W_Q' = [W_Q; b_Q]`` and ``W_K' = [W_K; b_K]`` (``[n_heads, d_model + 1, d_head]``, the input
  extended by a constant 1), ``W_Q' W_K'ᵀ = U S Vᵀ`` and ``W_Q' ← U √S``, ``W_K' ← V √S``;
- ``OV``: ``b_O ← b_O + Σ_h b_V[h] W_O[h]``, ``b_V ← 0`` (attention patterns sum to 1), and with
  ``W_V W_O = U S Vᵀ``, ``W_V ← U S``, ``W_O ← Vᵀ`` (a rotation: ``z`` keeps the norm of the head's result).

The new weights are written into the HF parameters through the weight views. It is refused (before anything
changes) where it cannot be exact: rotary positions (``QK`` then depends on the positions), grouped keys and
values (one key head serves several query heads), views that are not the parameters themselves, attention sinks
with a value bias; and a probe run checks that the logits did not move, restoring the weights if they did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bridge.analysis.norm_readers import WeightProcessingError
from bridge.kernel.factored_matrix import FactoredMatrix

if TYPE_CHECKING:
    from bridge.analysis.protocol import HookedModelLike

#: The largest logit change (relative to the logits' scale) the probe run accepts after refactoring (fp32 SVDs).
TOLERANCE = 1e-4


@dataclass
class _Layer:
    """One layer's writable views (HF parameters seen in TransformerLens shapes) and its output projection."""

    W_Q: torch.Tensor  # [h, d_model, d_head]
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor  # [h, d_head, d_model]
    b_Q: torch.Tensor | None  # [h, d_head]
    b_K: torch.Tensor | None
    b_V: torch.Tensor | None
    out_proj: nn.Module


def why_not(bridge: HookedModelLike) -> str | None:
    """Why the refactoring cannot be done exactly on this model, or ``None`` when it can."""
    if not len(bridge.blocks) or not all(hasattr(block, "attn") for block in bridge.blocks):
        return "not every block is an attention block"
    if bridge.cfg.positional_embedding_type == "rotary":
        return "it uses rotary positions, so a head's QK circuit depends on the query and key positions"
    if bridge.cfg.n_key_value_heads != bridge.cfg.n_heads:
        return "its keys and values are grouped (GQA/MQA): one key head serves several query heads"
    try:
        _plan(bridge)
    except WeightProcessingError as error:
        return str(error)
    return None


def _views_of(module: nn.Module, tensors: dict[str, torch.Tensor | None]) -> None:
    """Raise unless every tensor is a view of one of ``module``'s parameters (writing to it changes the model)."""
    storages = {p.untyped_storage().data_ptr() for p in module.parameters()}
    for name, tensor in tensors.items():
        if tensor is not None and tensor.untyped_storage().data_ptr() not in storages:
            raise WeightProcessingError(
                f"{name} of {type(module).__name__} is a copy, not a view of its parameters (its q/k/v layout "
                "gathers heads), so the refactored weights cannot be written back"
            )


def _plan(bridge: HookedModelLike) -> list[_Layer]:
    layers = []
    for i, block in enumerate(bridge.blocks):
        attn = block.attn
        try:
            raw = attn.qkv_weights()
            out_proj: nn.Module = attn.output_projection()
            W_O: torch.Tensor = attn.W_O
        except (AttributeError, NotImplementedError) as error:
            raise WeightProcessingError(f"blocks.{i}.attn has no per-head weight views ({error})") from None
        if raw.b_V is not None and hasattr(attn, "hook_sink_logits"):
            raise WeightProcessingError("its attention has sinks, so the value bias cannot move into b_O")
        views: dict[str, torch.Tensor | None] = {
            "W_Q": raw.W_Q,
            "W_K": raw.W_K,
            "W_V": raw.W_V,
            "b_Q": raw.b_Q,
            "b_K": raw.b_K,
            "b_V": raw.b_V,
        }
        _views_of(attn.hf, views)
        _views_of(out_proj, {"W_O": W_O})
        layers.append(_Layer(raw.W_Q, raw.W_K, raw.W_V, W_O, raw.b_Q, raw.b_K, raw.b_V, out_proj))
    return layers


def _with_bias_row(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``[h, d_model, d]`` and ``[h, d]`` → ``[h, d_model + 1, d]`` (the bias as the weight of a constant input)."""
    bias = torch.zeros_like(weight[:, 0]) if bias is None else bias
    return torch.cat([weight.float(), bias.float()[:, None, :]], dim=1)


def _write_bias(view: torch.Tensor | None, value: torch.Tensor, scale: float, what: str) -> None:
    """Write a refactored bias; where the HF projection has none, the value must be (numerically) zero next to
    ``scale``, the weights' largest entry."""
    if view is not None:
        view.copy_(value.to(view.dtype))
    elif float(value.abs().max()) > TOLERANCE * max(1.0, scale):
        raise WeightProcessingError(f"the refactored {what} is not zero, and the HF projection has no bias to take it")


def _refactor(layer: _Layer) -> None:
    q_eff = _with_bias_row(layer.W_Q, layer.b_Q)  # [h, d_model + 1, d_head]
    k_eff = _with_bias_row(layer.W_K, layer.b_K)
    q_even, k_even_t = FactoredMatrix(q_eff, k_eff.transpose(-2, -1)).make_even().pair
    k_even = k_even_t.transpose(-2, -1)  # [h, d_model + 1, d_head]
    w_v, w_o = layer.W_V.float(), layer.W_O.float()
    if layer.b_V is not None:
        delta = torch.einsum("hd,hdm->m", layer.b_V.float(), w_o)  # [d_model]
        bias = getattr(layer.out_proj, "bias", None)
        if bias is None:
            weight = layer.out_proj.weight
            layer.out_proj.bias = nn.Parameter(delta.to(weight.dtype), requires_grad=weight.requires_grad)
        else:
            bias.add_(delta.to(bias.dtype))
        layer.b_V.zero_()
    u, s, v = FactoredMatrix(w_v, w_o).svd()  # [h, d_model, d_head], [h, d_head], [h, d_model, d_head]
    layer.W_Q.copy_(q_even[:, :-1].to(layer.W_Q.dtype))
    layer.W_K.copy_(k_even[:, :-1].to(layer.W_K.dtype))
    _write_bias(layer.b_Q, q_even[:, -1], float(q_even.abs().max()), "query bias")
    _write_bias(layer.b_K, k_even[:, -1], float(k_even.abs().max()), "key bias")
    layer.W_V.copy_((u * s[..., None, :]).to(layer.W_V.dtype))
    layer.W_O.copy_(v.transpose(-2, -1).to(layer.W_O.dtype))


def refactor_factored_attn_matrices(bridge: HookedModelLike, run: Callable[[], Any]) -> None:
    """Refactor every layer in place (see the module doc); raises ``WeightProcessingError`` and leaves the model
    as it was if it cannot be done exactly."""
    reason = why_not(bridge)
    if reason:
        raise WeightProcessingError(f"refactor_factored_attn_matrices is not possible: {reason}")
    layers = _plan(bridge)
    modules = [m for block, layer in zip(bridge.blocks, layers, strict=True) for m in (block.attn.hf, layer.out_proj)]
    params = {id(p): p for module in modules for p in module.parameters()}
    saved = {key: p.detach().clone() for key, p in params.items()}
    saved_biases = [(layer.out_proj, getattr(layer.out_proj, "bias", None)) for layer in layers]
    before = run().logits.float()
    try:
        for layer in layers:
            _refactor(layer)
        after = run().logits.float()
        scale = max(1.0, float(before.abs().max()))
        if not torch.allclose(after, before, atol=TOLERANCE * scale, rtol=0):
            raise WeightProcessingError(
                "refactoring changed the model's logits (by up to "
                f"{float((after - before).abs().max()):.3g}): its attention is not the bilinear QK / linear OV form "
                "the refactoring assumes (a norm or clamp on q/k, or a layout bridge does not know)"
            )
    except BaseException:
        for key, p in params.items():
            p.copy_(saved[key])
        for module, bias in saved_biases:
            if bias is None and getattr(module, "bias", None) is not None:
                module.bias = None
        raise


__all__ = ["refactor_factored_attn_matrices", "why_not"]
