"""Per-component weight views in TransformerLens's names and shapes, read live from the HF parameters.

Mixed into the attention, MLP and MoE components: ``blocks[i].attn.W_Q`` ``[n_heads, d_model, d_head]``,
``blocks[i].mlp.W_in`` ``[d_model, d_mlp]`` and so on. Every view is a reshaped (and, for ``nn.Linear``,
transposed) view of the HF weight, so it follows the model's current parameters and gradients flow to
them; only what cannot be a view (GQA-expanded keys/values, zero biases) is computed on each access.

A view that a layer does not have raises ``WeightViewError``, a ``BridgeError`` that is also an
``AttributeError`` (so ``hasattr`` works) and says what exists instead.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import einops
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from bridge.kernel.errors import BridgeError
from bridge.kernel.factored_matrix import FactoredMatrix

#: How a fused q/k/v projection orders its output columns:
#: ``"grouped"`` ``[q (h·d) | k (kv·d) | v (kv·d)]``; ``"per_head"`` per head ``[q | k | v]`` (needs kv = h);
#: ``"kv_groups"`` per kv head ``[q_1 … q_g | k | v]`` with ``g = h / kv`` (Falcon's new decoder architecture);
#: ``"partitioned"`` ``partitions`` equal parts, each holding its share of the q, k and v heads in ``order``
#: (CodeGen: 4 parts of ``[q | v | k]``, part ``i`` holding heads ``i·h/4 … (i+1)·h/4 - 1``).
FusedLayout = Literal["grouped", "per_head", "kv_groups", "partitioned"]


class WeightViewError(BridgeError, AttributeError):
    """A weight view that this model or layer does not have; the message says what exists instead."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def linear_in_out(module: nn.Module) -> torch.Tensor:
    """A linear layer's weight as ``[d_in, d_out]`` (HF ``Conv1D`` stores it so; ``nn.Linear`` transposed)."""
    if isinstance(module, Conv1D):
        return module.weight
    return module.weight.T


def linear_bias(module: nn.Module) -> torch.Tensor | None:
    """A linear layer's bias ``[d_out]``, or None when it has none."""
    bias = getattr(module, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else None


def partition_heads(n_heads: int, n_kv_heads: int, partitions: int, order: str) -> dict[str, int]:
    """Heads of each kind (``"q"``, ``"k"``, ``"v"``) in one part of a ``"partitioned"`` fused layout, in ``order``.

    Raises ``BridgeError`` when ``order`` is not an ordering of ``"qkv"`` or the parts do not split the heads evenly.
    """
    if sorted(order) != ["k", "q", "v"]:
        raise BridgeError(f"a partitioned fused q/k/v layout needs order to be an ordering of 'qkv', not {order!r}")
    if partitions < 1 or n_heads % partitions or n_kv_heads % partitions:
        raise BridgeError(
            f"a fused q/k/v projection in {partitions} parts needs n_heads ({n_heads}) and n_kv_heads ({n_kv_heads}) "
            "to be multiples of the number of parts; check the adapter's partitions against the model's config"
        )
    counts = {"q": n_heads // partitions, "k": n_kv_heads // partitions, "v": n_kv_heads // partitions}
    return {kind: counts[kind] for kind in order}


def partition_slice(
    kind: str, head: int, n_heads: int, n_kv_heads: int, d_head: int, partitions: int, order: str
) -> slice:
    """The columns of head ``head`` of ``kind`` (``"q"``, ``"k"``, ``"v"``) in a ``"partitioned"`` fused layout."""
    counts = partition_heads(n_heads, n_kv_heads, partitions, order)
    width = sum(counts.values()) * d_head  # columns per part
    part, index = divmod(head, counts[kind])
    offset = sum(counts[k] for k in order[: order.index(kind)]) * d_head
    start = part * width + offset + index * d_head
    return slice(start, start + d_head)


def split_partitioned(
    columns: torch.Tensor, n_heads: int, n_kv_heads: int, d_head: int, partitions: int, order: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[..., cols]`` in a ``"partitioned"`` layout → ``q`` ``[..., n_heads, d]``, ``k``, ``v`` ``[..., n_kv, d]``."""
    counts = partition_heads(n_heads, n_kv_heads, partitions, order)
    parts = einops.rearrange(columns, "... (g c) -> ... g c", g=partitions)  # [..., parts, cols per part]
    chunks = parts.split([n * d_head for n in counts.values()], dim=-1)
    heads = {
        kind: einops.rearrange(chunk, "... g (n d) -> ... (g n) d", d=d_head)
        for kind, chunk in zip(order, chunks, strict=True)
    }
    return heads["q"], heads["k"], heads["v"]


def merge_partitioned(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, partitions: int, order: str) -> torch.Tensor:
    """The inverse of ``split_partitioned``: ``q`` ``[..., h, d]``, ``k``, ``v`` ``[..., kv, d]`` → ``[..., cols]``."""
    heads = {"q": q, "k": k, "v": v}
    chunks = [einops.rearrange(heads[kind], "... (g n) d -> ... g (n d)", g=partitions) for kind in order]
    return einops.rearrange(torch.cat(chunks, dim=-1), "... g c -> ... (g c)")


def split_fused(
    columns: torch.Tensor,
    layout: FusedLayout,
    n_heads: int,
    n_kv_heads: int,
    d_head: int,
    partitions: int = 1,
    order: str = "qkv",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split the last axis of a fused q/k/v weight ``[d_model, cols]`` or bias ``[cols]`` into heads
    (``partitions`` and ``order``: the ``"partitioned"`` layout's).

    Returns ``q`` ``[..., n_heads, d_head]`` and ``k``, ``v`` ``[..., n_kv_heads, d_head]`` (views, except in the
    ``"kv_groups"`` and ``"partitioned"`` layouts, where heads of different parts are gathered into a copy).
    """
    if layout == "partitioned":
        return split_partitioned(columns, n_heads, n_kv_heads, d_head, partitions, order)
    if layout == "per_head":
        q, k, v = einops.rearrange(columns, "... (h three d) -> three ... h d", three=3, d=d_head).unbind(0)
        return q, k, v
    if layout == "kv_groups":
        groups = einops.rearrange(columns, "... (kv g d) -> ... kv g d", kv=n_kv_heads, d=d_head)
        q = einops.rearrange(groups[..., :-2, :], "... kv g d -> ... (kv g) d")
        return q, groups[..., -2, :], groups[..., -1, :]
    q, k, v = columns.split((n_heads * d_head, n_kv_heads * d_head, n_kv_heads * d_head), dim=-1)
    return (
        einops.rearrange(q, "... (h d) -> ... h d", d=d_head),
        einops.rearrange(k, "... (h d) -> ... h d", d=d_head),
        einops.rearrange(v, "... (h d) -> ... h d", d=d_head),
    )


def heads_first(weight: torch.Tensor) -> torch.Tensor:
    """``[d_model, n, d]`` -> ``[n, d_model, d]`` (a view)."""
    return einops.rearrange(weight, "m n d -> n m d")


class QKVWeights(NamedTuple):
    """Raw per-head projections: ``W_Q`` ``[h, d_model, d_head]``, ``W_K``/``W_V`` ``[kv, d_model, d]``;
    biases ``[h or kv, d]`` or None where the HF module has none."""

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    b_Q: torch.Tensor | None
    b_K: torch.Tensor | None
    b_V: torch.Tensor | None


def separate_qkv(q: nn.Module, k: nn.Module, v: nn.Module, d_head: int, d_head_v: int | None = None) -> QKVWeights:
    """Per-head views of separate q, k, v projection modules."""

    def per_head(module: nn.Module, d: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = einops.rearrange(linear_in_out(module), "m (n d) -> n m d", d=d)
        bias = linear_bias(module)
        return weight, None if bias is None else einops.rearrange(bias, "(n d) -> n d", d=d)

    (wq, bq), (wk, bk), (wv, bv) = per_head(q, d_head), per_head(k, d_head), per_head(v, d_head_v or d_head)
    return QKVWeights(wq, wk, wv, bq, bk, bv)


def fused_qkv(
    module: nn.Module,
    layout: FusedLayout,
    n_heads: int,
    n_kv_heads: int,
    d_head: int,
    partitions: int = 1,
    order: str = "qkv",
) -> QKVWeights:
    """Per-head views of one fused q/k/v projection module."""
    shape = (layout, n_heads, n_kv_heads, d_head, partitions, order)
    q, k, v = split_fused(linear_in_out(module), *shape)  # [d_model, n, d] each
    bias = linear_bias(module)
    bq, bk, bv = (None, None, None) if bias is None else split_fused(bias, *shape)
    return QKVWeights(heads_first(q), heads_first(k), heads_first(v), bq, bk, bv)


def _zeros_like_rows(weight: torch.Tensor) -> torch.Tensor:
    """Zeros shaped like ``weight`` without its second-to-last axis: the bias of ``x @ weight``."""
    return torch.zeros(*weight.shape[:-2], weight.shape[-1], dtype=weight.dtype, device=weight.device)


class SurfacesViewErrors:
    """Mixed before ``nn.Module``: keeps a view property's own ``WeightViewError`` message.

    When a property raises ``AttributeError``, Python falls back to ``__getattr__``, and ``nn.Module``'s
    would replace the message with a generic one; this one re-raises the view's own error instead.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            view = getattr(type(self), name, None)
            if isinstance(view, property) and view.fget is not None:
                view.fget(self)
            raise


def _label(component: nn.Module) -> str:
    """``blocks.3.attn`` (from the component's own hook points, once the bridge has named them), else its class name."""
    for hook in component.children():
        name = getattr(hook, "name", "")
        if isinstance(name, str) and name.startswith(("blocks.", "vision", "text.")) and "." in name:
            return name.rsplit(".", 1)[0]
    return type(component).__name__


class WeightViewsMixin(SurfacesViewErrors):
    """Shared by the component mixins."""

    def _layer_label(self) -> str:
        """``blocks.3.attn`` once the bridge has named the hook points, else the component's class name."""
        for hook in self.own_hook_points():  # type: ignore[attr-defined]
            if "." in hook.name and not hook.name.startswith("<"):
                return hook.name.rsplit(".", 1)[0]
        return type(self).__name__


class AttentionWeights(WeightViewsMixin):
    """TransformerLens's attention weights: ``W_Q/W_K/W_V`` ``[n_heads, d_model, d_head]``, ``W_O``
    ``[n_heads, d_head_v, d_model]``, ``b_Q/b_K/b_V`` ``[n_heads, d_head]``, ``b_O`` ``[d_model]``, and the
    factored ``QK`` ``[n_heads, d_model, d_model]`` and ``OV`` ``[n_heads, d_model, d_model]``.

    Under GQA/MQA, ``W_K``/``W_V``/``b_K``/``b_V`` are expanded to ``n_heads`` (query head ``h`` reads key
    head ``h // (n_heads / n_kv_heads)``); the raw ``[n_kv_heads, …]`` ones are ``_W_K``, ``_W_V``, ``_b_K``,
    ``_b_V``. Components provide ``qkv_weights()`` and ``output_projection()``.
    """

    n_heads: int
    n_kv_heads: int
    #: The bound HF clamps q, k and v to right after their projections (MPT's and OLMo's ``clip_qkv``), where it
    #: does: ``hook_q/k/v`` are then ``clamp(x @ W_Q + b_Q, -qkv_clip, qkv_clip)``. ``None``: no clamp.
    qkv_clip: float | None = None

    def qkv_weights(self) -> QKVWeights:
        """The raw per-head q/k/v projections of this layer (views of the HF parameters)."""
        raise NotImplementedError

    def output_projection(self) -> nn.Module:
        """The HF module that maps ``z`` (heads concatenated) to ``d_model``."""
        raise NotImplementedError

    def _expand(self, raw: torch.Tensor) -> torch.Tensor:
        """``[n_kv_heads, …]`` -> ``[n_heads, …]``: each kv head repeated for the query heads that read it."""
        if raw.shape[0] == self.n_heads:
            return raw
        return torch.repeat_interleave(raw, self.n_heads // raw.shape[0], dim=0)

    @staticmethod
    def _bias_or_zeros(bias: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
        return bias if bias is not None else _zeros_like_rows(weight)

    @property
    def W_Q(self) -> torch.Tensor:
        """Query weights ``[n_heads, d_model, d_head]`` (``q = x @ W_Q + b_Q``, before any rotary)."""
        return self.qkv_weights().W_Q

    @property
    def _W_K(self) -> torch.Tensor:
        """Raw key weights ``[n_kv_heads, d_model, d_head]``."""
        return self.qkv_weights().W_K

    @property
    def _W_V(self) -> torch.Tensor:
        """Raw value weights ``[n_kv_heads, d_model, d_head_v]``."""
        return self.qkv_weights().W_V

    @property
    def W_K(self) -> torch.Tensor:
        """Key weights ``[n_heads, d_model, d_head]`` (expanded from ``_W_K`` under GQA/MQA)."""
        return self._expand(self._W_K)

    @property
    def W_V(self) -> torch.Tensor:
        """Value weights ``[n_heads, d_model, d_head_v]`` (expanded from ``_W_V`` under GQA/MQA)."""
        return self._expand(self._W_V)

    @property
    def b_Q(self) -> torch.Tensor:
        """Query bias ``[n_heads, d_head]`` (zeros when the projection has none)."""
        weights = self.qkv_weights()
        return self._bias_or_zeros(weights.b_Q, weights.W_Q)

    @property
    def _b_K(self) -> torch.Tensor:
        """Raw key bias ``[n_kv_heads, d_head]``."""
        weights = self.qkv_weights()
        return self._bias_or_zeros(weights.b_K, weights.W_K)

    @property
    def _b_V(self) -> torch.Tensor:
        """Raw value bias ``[n_kv_heads, d_head_v]``."""
        weights = self.qkv_weights()
        return self._bias_or_zeros(weights.b_V, weights.W_V)

    @property
    def b_K(self) -> torch.Tensor:
        """Key bias ``[n_heads, d_head]`` (expanded under GQA/MQA)."""
        return self._expand(self._b_K)

    @property
    def b_V(self) -> torch.Tensor:
        """Value bias ``[n_heads, d_head_v]`` (expanded under GQA/MQA)."""
        return self._expand(self._b_V)

    @property
    def W_O(self) -> torch.Tensor:
        """Output weights ``[n_heads, d_head_v, d_model]``: head ``h`` writes ``z[..., h, :] @ W_O[h]``."""
        return einops.rearrange(linear_in_out(self.output_projection()), "(h d) m -> h d m", h=self.n_heads)

    @property
    def b_O(self) -> torch.Tensor:
        """Output bias ``[d_model]`` (zeros when the projection has none)."""
        out = self.output_projection()
        bias = linear_bias(out)
        return bias if bias is not None else _zeros_like_rows(linear_in_out(out))

    @property
    def QK(self) -> FactoredMatrix:
        """``W_Q @ W_Kᵀ`` per head, factored: ``[n_heads, d_model, d_model]``."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """``W_V @ W_O`` per head, factored: ``[n_heads, d_model, d_model]``."""
        return FactoredMatrix(self.W_V, self.W_O)


class CoreAttentionWeights(AttentionWeights):
    """For core's ``Attention``: reads the q/k/v projections through the layer's ``QKVSource``."""

    hf: nn.Module
    qkv: Any
    out_proj: nn.Module
    d_head: int

    def qkv_weights(self) -> QKVWeights:
        weights = self.qkv.weights(self)
        if weights is None:
            raise WeightViewError(
                f"{self._layer_label()} reads q/k/v through {type(self.qkv).__name__}, which has no per-head "
                "weight views; its component must override qkv_weights() (or the source weights()). W_O and b_O "
                "exist."
            )
        return weights

    def output_projection(self) -> nn.Module:
        return self.out_proj

    @property
    def qkv_clip(self) -> float | None:  # type: ignore[override]
        """The clamp of the layer's ``QKVSource`` (its ``clip``: OLMo's ``clip_qkv``), if it has one."""
        return getattr(self.qkv, "clip", None)


class MLPWeights(WeightViewsMixin):
    """TransformerLens's dense MLP weights: ``W_in`` ``[d_model, d_mlp]`` (the linear input; the up
    projection of a gated MLP), ``W_gate`` ``[d_model, d_mlp]`` (gated MLPs: the projection the activation
    is applied to), ``W_out`` ``[d_mlp, d_model]``; biases ``b_in``, ``b_gate`` ``[d_mlp]``, ``b_out``
    ``[d_model]`` (zeros where the HF module has none). Components provide ``mlp_projections()``."""

    def mlp_projections(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(W_in [d_model, d_mlp], W_gate [d_model, d_mlp] or None, W_out [d_mlp, d_model])``."""
        raise NotImplementedError

    def mlp_biases(self) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """``(b_in, b_gate, b_out)``, each None where the HF module has none."""
        raise NotImplementedError

    @property
    def W_in(self) -> torch.Tensor:
        """Input weights ``[d_model, d_mlp]`` (``pre = x @ W_in + b_in``; the up projection when gated)."""
        return self.mlp_projections()[0]

    @property
    def W_gate(self) -> torch.Tensor:
        """Gate weights ``[d_model, d_mlp]`` of a gated MLP: ``post = act(x @ W_gate) * (x @ W_in + b_in)``."""
        gate = self.mlp_projections()[1]
        if gate is None:
            raise WeightViewError(
                f"{self._layer_label()} is not a gated MLP, so it has no W_gate; it has W_in, b_in, W_out, b_out"
            )
        return gate

    @property
    def W_out(self) -> torch.Tensor:
        """Output weights ``[d_mlp, d_model]``: ``mlp_out = post @ W_out + b_out``."""
        return self.mlp_projections()[2]

    @property
    def b_in(self) -> torch.Tensor:
        """Input bias ``[d_mlp]`` (zeros when the projection has none)."""
        bias = self.mlp_biases()[0]
        return bias if bias is not None else _zeros_like_rows(self.W_in)

    @property
    def b_gate(self) -> torch.Tensor:
        """Gate bias ``[d_mlp]`` of a gated MLP (zeros when the projection has none)."""
        gate = self.W_gate
        bias = self.mlp_biases()[1]
        return bias if bias is not None else _zeros_like_rows(gate)

    @property
    def b_out(self) -> torch.Tensor:
        """Output bias ``[d_model]`` (zeros when the projection has none)."""
        bias = self.mlp_biases()[2]
        return bias if bias is not None else _zeros_like_rows(self.W_out)


class CoreMLPWeights(MLPWeights):
    """For core's ``MLP``: ``pre`` (the activation's input), optional ``pre_linear`` (gated) and ``out``."""

    hf: nn.Module
    paths: dict[str, str | None]

    def _projection_modules(self) -> tuple[nn.Module, nn.Module | None, nn.Module]:
        get = self.hf.get_submodule
        pre, pre_linear = get(self.paths["pre"]), self.paths["pre_linear"]
        if pre_linear is None:
            return pre, None, get(self.paths["out"])
        return get(pre_linear), pre, get(self.paths["out"])  # gated: W_in is the linear half

    def mlp_projections(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        w_in, gate, out = self._projection_modules()
        return linear_in_out(w_in), None if gate is None else linear_in_out(gate), linear_in_out(out)

    def mlp_biases(self) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        w_in, gate, out = self._projection_modules()
        return linear_bias(w_in), None if gate is None else linear_bias(gate), linear_bias(out)


class MoEWeights(WeightViewsMixin):
    """A sparse MoE MLP's weights, per expert: ``W_gate``, ``W_in`` ``[n_experts, d_model, d_mlp]``, ``W_out``
    ``[n_experts, d_mlp, d_model]``, biases ``b_gate``, ``b_in`` ``[n_experts, d_mlp]``, ``b_out``
    ``[n_experts, d_model]`` (zeros where HF has none); the router ``W_router`` ``[d_model, n_experts]``.

    Expert ``e`` computes ``(act(x @ W_gate[e] + b_gate[e]) * (x @ W_in[e] + b_in[e])) @ W_out[e] + b_out[e]``,
    as a gated MLP. Read from ``transformers``' fused expert layout: ``gate_up_proj`` ``[n_experts, 2·d_mlp,
    d_model]`` (gate half first) and ``down_proj`` ``[n_experts, d_model, d_mlp]``, or as the experts module's
    own flags say: ``is_transposed`` (stored ``[n_experts, d_in, d_out]``), ``is_concatenated=False`` (gate and
    up columns interleaved, ``[g0, u0, g1, u1, …]``, GPT-OSS); biases ``gate_up_proj_bias`` likewise.
    """

    #: The model-wide stacked ``W_in``… do not exist for MoE layers (their shapes differ).
    stacks_as_dense = False
    experts: nn.Module
    router: nn.Module

    def _expert_parameter(self, name: str) -> torch.Tensor:
        value = getattr(self.experts, name, None)
        if not isinstance(value, torch.Tensor):
            raise WeightViewError(
                f"{self._layer_label()}'s experts module ({type(self.experts).__name__}) has no fused {name!r} "
                "parameter, so bridge cannot lay out its per-expert weights; read mlp.experts' parameters directly"
            )
        return value

    def _in_out(self, weight: torch.Tensor) -> torch.Tensor:
        """An expert weight as ``[E, d_in, d_out]`` (HF stores ``[E, d_out, d_in]`` unless ``is_transposed``)."""
        return weight if getattr(self.experts, "is_transposed", False) else weight.transpose(-2, -1)

    def _split_gate_up(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., 2·d_mlp]`` -> gate, up ``[..., d_mlp]`` (halves, or alternate columns when interleaved)."""
        if getattr(self.experts, "is_concatenated", True):
            gate, up = fused.chunk(2, dim=-1)
            return gate, up
        return fused[..., ::2], fused[..., 1::2]

    def _gate_up(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split_gate_up(self._in_out(self._expert_parameter("gate_up_proj")))  # 2 × [E, d_model, d_mlp]

    def _expert_bias(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        bias = getattr(self.experts, f"{name}_bias", None)
        return bias if isinstance(bias, torch.Tensor) else _zeros_like_rows(weight)

    @property
    def W_gate(self) -> torch.Tensor:
        """Per-expert gate weights ``[n_experts, d_model, d_mlp]`` (the activation's input)."""
        return self._gate_up()[0]

    @property
    def W_in(self) -> torch.Tensor:
        """Per-expert linear (up) weights ``[n_experts, d_model, d_mlp]``."""
        return self._gate_up()[1]

    @property
    def W_out(self) -> torch.Tensor:
        """Per-expert output weights ``[n_experts, d_mlp, d_model]``."""
        return self._in_out(self._expert_parameter("down_proj"))

    @property
    def b_gate(self) -> torch.Tensor:
        """``[n_experts, d_mlp]``."""
        gate = self.W_gate
        bias = getattr(self.experts, "gate_up_proj_bias", None)
        return self._split_gate_up(bias)[0] if isinstance(bias, torch.Tensor) else _zeros_like_rows(gate)

    @property
    def b_in(self) -> torch.Tensor:
        """``[n_experts, d_mlp]``."""
        w_in = self.W_in
        bias = getattr(self.experts, "gate_up_proj_bias", None)
        return self._split_gate_up(bias)[1] if isinstance(bias, torch.Tensor) else _zeros_like_rows(w_in)

    @property
    def b_out(self) -> torch.Tensor:
        """``[n_experts, d_model]``."""
        return self._expert_bias("down_proj", self.W_out)

    @property
    def W_router(self) -> torch.Tensor:
        """Router weights ``[d_model, n_experts]``: ``router_logits = x @ W_router + b_router`` (before any scaling)."""
        weight = getattr(self.router, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise WeightViewError(f"{self._layer_label()}'s router ({type(self.router).__name__}) has no weight")
        return weight.T

    @property
    def b_router(self) -> torch.Tensor:
        """Router bias ``[n_experts]`` (GPT-OSS; zeros when the router has none): ``x @ W_router + b_router``."""
        weight = self.W_router
        bias = getattr(self.router, "bias", None)
        return bias if isinstance(bias, torch.Tensor) else _zeros_like_rows(weight)


class NormWeights(WeightViewsMixin):
    """TransformerLens's norm parameters: ``w`` ``[d]`` (the effective scale: Gemma's ``1 + weight``) and, for
    layer norms, ``b`` ``[d]`` (zeros when the HF norm has none). RMS norms have no ``b``, as in TransformerLens;
    a norm without a weight (OLMo's non-parametric layer norm, TransformerLens's ``LNPre``) has neither."""

    hf: nn.Module
    kind: str
    weight_offset: float

    def _weight(self) -> torch.Tensor:
        weight = getattr(self.hf, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise WeightViewError(
                f"{self._layer_label()} ({type(self.hf).__name__}) is a norm without a weight, so it has no w or b "
                "(its output is the normalized input, as TransformerLens's LNPre)"
            )
        return weight

    @property
    def w(self) -> torch.Tensor:
        """Scale ``[d]``: ``normalized * w (+ b)``; the HF weight itself unless the norm scales by
        ``weight + offset``."""
        weight = self._weight()
        return weight + self.weight_offset if self.weight_offset else weight

    @property
    def b(self) -> torch.Tensor:
        """Bias ``[d]`` of a layer norm (zeros when the HF norm has none)."""
        weight = self._weight()
        if self.kind != "LN":
            raise WeightViewError(
                f"{self._layer_label()} is an RMS norm, which has no bias b (as in TransformerLens); it has w"
            )
        bias = getattr(self.hf, "bias", None)
        return bias if isinstance(bias, torch.Tensor) else torch.zeros_like(weight)


class TokenEmbeddingWeights(WeightViewsMixin):
    """``W_E`` ``[d_vocab, d_model]``: the token embedding table (the raw table: a scale or norm applied after it
    is not in it). Read from ``scope.get_input_embeddings()`` where the component has a scope (the HF base model),
    so a component on a module after the table (OPT's ``project_in``, BLOOM's embedding norm) still gives it."""

    hf: nn.Module
    scope: nn.Module | None

    @property
    def W_E(self) -> torch.Tensor:
        """Token embedding ``[d_vocab, d_model]``."""
        table = None
        if self.scope is not None:
            try:
                table = self.scope.get_input_embeddings()
            except (NotImplementedError, AttributeError):
                table = None
        weight = getattr(table if table is not None else self.hf, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise WeightViewError(f"{type(self.hf).__name__} holds no token embedding table (weight), so no W_E")
        return weight


class PosEmbeddingWeights(WeightViewsMixin):
    """``W_pos`` ``[n_ctx, d_model]``: row ``p`` for position ``p``. A table read at ``position + offset`` (OPT's
    and XGLM's ``offset`` of 2) starts at row ``offset``; a fixed sinusoidal table (a ``weights`` buffer, XGLM)
    is given as it is."""

    hf: nn.Module

    @property
    def W_pos(self) -> torch.Tensor:
        """Position embedding ``[n_ctx, d_model]`` (the parameter itself where there is no offset)."""
        table = getattr(self.hf, "weight", None)
        table = getattr(self.hf, "weights", None) if table is None else table
        if not isinstance(table, torch.Tensor):
            raise WeightViewError(f"{type(self.hf).__name__} holds no position table (weight or weights), so no W_pos")
        offset = getattr(self.hf, "offset", 0)
        return table[offset:] if offset else table


class UnembedWeights(WeightViewsMixin):
    """``W_U`` ``[d_model, d_vocab]`` and ``b_U`` ``[d_vocab]``, so that ``logits = x @ W_U + b_U``: the LM head's
    weight and bias, times the model's logit scale where it multiplies the head's output
    (``cfg.extra["logit_scale"]``: Cohere, Granite); then they are scaled copies, not the parameters."""

    hf: nn.Module
    logit_scale: float | None

    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding ``[d_model, d_vocab]``."""
        weight = getattr(self.hf, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise WeightViewError(f"the unembedding {type(self.hf).__name__} has no weight, so there is no W_U")
        return weight.T if self.logit_scale is None else weight.T * self.logit_scale

    @property
    def b_U(self) -> torch.Tensor:
        """Unembedding bias ``[d_vocab]`` (zeros when the head has none)."""
        w_u = self.W_U
        bias = getattr(self.hf, "bias", None)
        if not isinstance(bias, torch.Tensor):
            return torch.zeros(w_u.shape[-1], dtype=w_u.dtype, device=w_u.device)
        return bias if self.logit_scale is None else bias * self.logit_scale


#: TransformerLens's parameter and weight-view names, which a component's missing-attribute error explains.
VIEW_NAMES = (
    *("W_E", "W_pos", "W_U", "b_U", "w", "b"),
    *("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "QK", "OV"),
    *("W_in", "W_gate", "W_out", "b_in", "b_gate", "b_out", "W_router", "b_router"),
)


class MissingAttributeError(WeightViewError):
    """A component attribute that does not exist; the message (built when shown) lists the component's weight
    views, its child components and its HF module's parameters."""

    def __init__(self, component: nn.Module, name: str) -> None:
        super().__init__(name)
        self.component, self.name = component, name

    def __str__(self) -> str:
        component, name = self.component, self.name
        label = component._layer_label() if hasattr(type(component), "_layer_label") else _label(component)
        views = [v for v in VIEW_NAMES if isinstance(getattr(type(component), v, None), property)]
        children = [n for n, m in component.named_children() if not n.startswith("hook_") and n != "taps"]
        hf = getattr(component, "hf", None)
        params = [f"{n} {list(p.shape)}" for n, p in hf.named_parameters()][:12] if hf is not None else []
        parts = [f"weight views: {', '.join(views)}" if views else "no weight views"]
        if children:
            parts.append(f"components: {', '.join(children)}")
        if hf is not None:
            parts.append(f"HF module {type(hf).__name__} ({', '.join(params) or 'no parameters'}), as .hf")
        what = "weight view" if name in VIEW_NAMES else "attribute"
        return f"{label} ({type(component).__name__}) has no {what} {name!r}; it has {'; '.join(parts)}"
