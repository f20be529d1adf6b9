"""The attention seam: bridge's one function in ``transformers``' ``AttentionInterface``.

A bridged model's configs use the attention implementation ``"bridge"``. For every
attention call, ``bridge_attention`` looks up the bridge component of the calling
module; unless that layer has an attention-internal hook in use, it calls the
implementation the model had before (SDPA, eager, flash…) untouched. Masks are
built by that same implementation's mask function, so nothing else changes.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from functools import cache
from typing import Any, Protocol

import einops
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

IMPLEMENTATION = "bridge"


class SeamOwner(Protocol):
    seam_active: bool

    def run_seam(self, inner: Callable, module: nn.Module, query, key, value, attention_mask, **kwargs): ...


class Routed(str):
    """The value a routed config holds as its attention implementation: equal to ``"bridge"``, and
    carrying the implementation the model had (``inner``) and the models routed through it (``users``;
    several when models share one config).

    A copy or a pickle of the config holds the plain ``inner`` name instead, so a deep copy or a
    saved-and-loaded model is an ordinary HF model.
    """

    inner: str
    users: weakref.WeakSet

    def __new__(cls, inner: str) -> Routed:
        routed = super().__new__(cls, IMPLEMENTATION)
        routed.inner = inner
        routed.users = weakref.WeakSet()
        return routed

    def __reduce__(self) -> tuple:
        return str, (self.inner,)

    def __copy__(self) -> Routed:
        return self

    def __deepcopy__(self, memo: dict) -> str:
        return str(self.inner)


_owners: weakref.WeakKeyDictionary[nn.Module, weakref.ref] = weakref.WeakKeyDictionary()


def bridge_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """The function registered as ``"bridge"``; same signature as every HF attention function."""
    ref = _owners.get(module)
    owner = ref() if ref is not None else None
    inner = inner_attention(module)
    if owner is None or not owner.seam_active:
        return inner(module, query, key, value, attention_mask, **kwargs)
    return owner.run_seam(inner, module, query, key, value, attention_mask, **kwargs)


def _inner_name(config: Any) -> str:
    return getattr(getattr(config, "_attn_implementation", None), "inner", "sdpa")


def bridge_mask(*, config: Any, **kwargs: Any):
    """Build the mask the wrapped implementation expects (SDPA: bool or None; eager: additive)."""
    return ALL_MASK_ATTENTION_FUNCTIONS[_inner_name(config)](config=config, **kwargs)


AttentionInterface.register(IMPLEMENTATION, bridge_attention)
AttentionMaskInterface.register(IMPLEMENTATION, bridge_mask)


@cache
def _module_eager(module_type: type) -> Callable:
    """The eager attention function of the HF modeling file that defines ``module_type``."""
    fn = getattr(sys.modules.get(module_type.__module__), "eager_attention_forward", None)
    return fn if fn is not None else eager_attention


def inner_attention(module: nn.Module) -> Callable:
    """The implementation the user had for the model this attention module belongs to."""
    name = _inner_name(getattr(module, "config", None))
    if name == "eager":
        return _module_eager(type(module))
    return ALL_ATTENTION_FUNCTIONS.get_interface(name, _module_eager(type(module)))


def _configs(hf_model: nn.Module) -> list[Any]:
    """The model's config, its sub-configs and the configs of its sub-models, each once."""
    found: dict[int, Any] = {}
    pending = [hf_model.config, *(getattr(m, "config", None) for m in hf_model.modules())]
    while pending:
        config = pending.pop()
        if config is None or id(config) in found or not hasattr(config, "_attn_implementation"):
            continue
        found[id(config)] = config
        pending.extend(getattr(config, key, None) for key in getattr(config, "sub_configs", {}) or {})
    return list(found.values())


def is_routed(hf_model: nn.Module) -> bool:
    """Whether the model's attention still goes through the seam."""
    return isinstance(getattr(hf_model.config, "_attn_implementation", None), Routed)


def enable(hf_model: nn.Module) -> None:
    """Route the model's attention through the seam, remembering the implementation it had."""
    configs = _configs(hf_model)
    fresh = [c for c in configs if not isinstance(c._attn_implementation, Routed)]
    had = {id(c): c._attn_implementation or "eager" for c in fresh}
    if fresh:
        hf_model.set_attn_implementation(IMPLEMENTATION)
    for config in configs:
        current = config._attn_implementation
        if not isinstance(current, Routed):
            current = Routed(had.get(id(config), "eager") if current == IMPLEMENTATION else current or "eager")
            config._attn_implementation_internal = current
        current.users.add(hf_model)


def disable(hf_model: nn.Module) -> None:
    """Give the model back the implementation it had before ``enable`` (a config shared with another
    routed model stays routed until that one is given back too)."""
    for config in _configs(hf_model):
        current = config._attn_implementation
        if isinstance(current, Routed):
            current.users.discard(hf_model)
            if not len(current.users):
                config._attn_implementation_internal = current.inner


def set_owner(module: nn.Module, owner: SeamOwner | None) -> None:
    """Make ``owner`` (an attention component) the seam owner of an HF attention module."""
    if owner is None:
        _owners.pop(module, None)
    else:
        _owners[module] = weakref.ref(owner)


def additive_mask(
    attention_mask: torch.Tensor | None, module: nn.Module, scores: torch.Tensor, is_causal: bool | None = None
) -> torch.Tensor | None:
    """Turn whatever mask HF passed (None, bool, additive float) into an additive one ``[..., q, k]``
    for ``scores`` ``[b, h, q, k]`` (or ``None``: nothing masked). Public: an attention component that
    computes attention inline (not through ``AttentionInterface``) masks its scores with it as HF eager does.

    ``None`` means causal when the call says so (``is_causal``, as HF passes it to SDPA) or, when it does
    not, when the layer is causal; and only with more than one query (as in SDPA). Masked positions get
    the dtype's minimum, as in HF eager attention.
    """
    q_len, k_len = scores.shape[-2:]
    if attention_mask is None:
        causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        if q_len == 1 or not causal:
            return None
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
        return _additive(allowed, scores)
    attention_mask = attention_mask[..., :k_len]
    if attention_mask.dtype == torch.bool:
        return _additive(attention_mask, scores)
    return attention_mask.to(scores.dtype)


def _additive(allowed: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    minimum = torch.finfo(scores.dtype).min
    return torch.full(allowed.shape, minimum, dtype=scores.dtype, device=scores.device).masked_fill(allowed, 0.0)


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    on_scores: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_pattern: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_sinks: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with HF's numerics, firing ``on_scores`` and ``on_pattern``; public.

    ``scores = q @ kᵀ · scaling`` (``d ** -0.5`` by default), soft-capped, plus an additive ``position_bias``
    ``[b or 1, h, q, k]`` where the HF module passes one (T5's relative position bias), plus ``additive_mask``;
    ``on_scores`` sees the masked scores ``[b, h, q, k]``, ``on_pattern`` the softmax (in float32, cast back).

    query ``[b, n_heads, q, d]``, key/value ``[b, n_kv_heads, k, d]`` → output ``[b, q, n_heads, d]``.
    Handles GQA/MQA, ``softcap`` and every mask form HF passes.

    Attention sinks (``s_aux`` ``[n_heads]``, GPT-OSS): a learned logit per head joins every row's softmax as an
    extra key with no value. ``on_sinks`` sees it per query ``[b, q, n_heads]``; the softmax then runs over
    ``[scores | sink]`` with the row maximum subtracted, in the scores' dtype (HF's sink numerics), and the
    sink's column is dropped: ``on_pattern`` sees ``[b, h, q, k]`` over the real keys, rows summing to < 1.
    """
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = einops.repeat(key, "b kv k d -> b (kv g) k d", g=groups)
        value = einops.repeat(value, "b kv k d -> b (kv g) k d", g=groups)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # [b, h, q, k]
    softcap = kwargs.get("softcap")
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    position_bias = kwargs.get("position_bias")
    if position_bias is not None:
        scores = scores + position_bias
    mask = additive_mask(attention_mask, module, scores, kwargs.get("is_causal"))
    if mask is not None:
        scores = scores + mask
    if on_scores is not None:
        scores = on_scores(scores)
    sinks = kwargs.get("s_aux")
    if sinks is None:
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    else:
        pattern = _softmax_with_sinks(scores, sinks, on_sinks).to(value.dtype)
    if on_pattern is not None:
        pattern = on_pattern(pattern)
    weights = nn.functional.dropout(pattern, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # [b, q, h, d]
    return out, pattern


def _softmax_with_sinks(
    scores: torch.Tensor, sinks: torch.Tensor, on_sinks: Callable[[torch.Tensor], torch.Tensor] | None
) -> torch.Tensor:
    """Softmax of ``scores`` ``[b, h, q, k]`` with one sink logit per head (``sinks`` ``[h]``) as an extra key;
    returns the real keys' probabilities ``[b, h, q, k]`` (each row sums to 1 - the sink's share)."""
    b, _, q, _ = scores.shape
    per_query = einops.repeat(sinks.to(scores.dtype), "h -> b q h", b=b, q=q)  # a copy: hooks may edit it
    if on_sinks is not None:
        per_query = on_sinks(per_query)
    combined = torch.cat([scores, einops.rearrange(per_query, "b q h -> b h q 1")], dim=-1)  # [b, h, q, k + 1]
    combined = combined - combined.max(dim=-1, keepdim=True).values
    return torch.softmax(combined, dim=-1, dtype=combined.dtype)[..., :-1]
