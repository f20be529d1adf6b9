"""The plain activation cache: hook name → activation, with TransformerLens's short keys.

``bridge.ActivationCache`` adds the analysis methods (logit lens, residual decompositions, head and neuron
results, logit attributions) from ``bridge.analysis.cache_analysis``.
"""

from __future__ import annotations

import logging
import operator
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from bridge.kernel.aliases import canonical_name
from bridge.kernel.errors import BridgeError, HookNameError, unknown_hook_error
from bridge.kernel.slicing import Slice, SliceInput

_BLOCK_HOOKS = {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mixer_in"}
_ATTN_HOOKS = {"q", "k", "v", "rot_q", "rot_k", "z", "result", "pattern", "attn_scores"}
_MLP_HOOKS = {"pre", "pre_linear", "post"}
_ALIASES = {
    "attn": "pattern",
    "attn_logits": "attn_scores",
    "key": "k",
    "query": "q",
    "value": "v",
    "mlp_pre": "pre",
    "mlp_post": "post",
}
_SUB_ALIASES = {"a": "attn", "attention": "attn", "m": "mlp", "b": None, "block": None, "blocks": None}
#: Hooks shaped ``[batch, head, query_pos, key_pos]``: their position dimension (the query) is 2.
_QUERY_POS_SECOND = ("hook_pattern", "hook_attn_scores")
#: Hooks with no query-position dimension (ALiBi's ``[batch or 1, head, 1, key_pos]`` bias).
_NO_POS = ("hook_alibi",)


def position_dim(hook_name: str, ndim: int) -> int | None:
    """The position dimension of a batched activation ``[batch, pos, ...]``: 1, or 2 for attention
    patterns and scores (the query position); ``None`` if it has none."""
    if hook_name.endswith(_NO_POS) or ndim < 2:
        return None
    return 2 if hook_name.endswith(_QUERY_POS_SECOND) else 1


def keep_positions(tensor: torch.Tensor, hook_name: str, positions: Slice) -> torch.Tensor:
    """``tensor`` (batched, as a hook sees it) with ``positions`` applied to its position dimension: a copy,
    so the cache does not keep the whole activation alive."""
    dim = position_dim(hook_name.removesuffix("_grad"), tensor.ndim)
    if dim is None or positions.mode == "identity":
        return tensor
    return positions.apply(tensor, dim=dim).clone()


def act_name(name: str, layer: int | None = None, sub: str | None = None) -> str:
    """The canonical hook name for a TransformerLens short name.

    ``act_name("resid_post", 3)`` → ``"blocks.3.hook_resid_post"``; ``act_name("pattern", 0)`` →
    ``"blocks.0.attn.hook_pattern"``; ``act_name("scale", 1, "ln2")`` → ``"blocks.1.ln2.hook_scale"``;
    ``act_name("scale")`` → ``"ln_final.hook_scale"``; ``act_name("embed")`` → ``"hook_embed"``.
    """
    if "." in name or (name.startswith("hook_") and layer is None):
        return name
    name = _ALIASES.get(name, name)
    if layer is None:
        if name in ("embed", "pos_embed"):
            return f"hook_{name}"
        if name in ("scale", "normalized"):
            return f"ln_final.hook_{name}"
        raise HookNameError(f"the short hook name {name!r} needs a layer, e.g. ({name!r}, 0)")
    prefix = f"blocks.{layer}."
    sub = _SUB_ALIASES.get(sub, sub) if isinstance(sub, str) else sub
    if sub is not None:
        return f"{prefix}{sub}.hook_{name}"
    if name in _ATTN_HOOKS:
        return f"{prefix}attn.hook_{name}"
    if name in _MLP_HOOKS:
        return f"{prefix}mlp.hook_{name}"
    if name in _BLOCK_HOOKS:
        return f"{prefix}hook_{name}"
    if name in ("scale", "normalized"):
        return f"{prefix}ln1.hook_{name}"
    return f"{prefix}hook_{name}"


class PlainActivationCache(Mapping[str, torch.Tensor]):
    """Activations of one forward pass, keyed by canonical hook name.

    Also accepts TransformerLens short keys: ``cache["resid_post", 3]``, ``cache["pattern", 0]``,
    ``cache["scale", 1, "ln2"]``, ``cache["embed"]``; negative layers count from the end.
    Family hooks resolve too when unambiguous (``cache["ssm_out", 0]``). A key that names nothing
    cached raises ``HookNameError`` (a ``KeyError``), so ``key in cache`` and ``cache.get(key)`` answer.

    ``ActivationCache(activations, model)`` (TransformerLens's order) works too: the layer count is then
    read from ``model.cfg``.
    """

    def __init__(
        self,
        activations: dict[str, torch.Tensor],
        n_layers: int | None = None,
        has_batch_dim: bool = True,
        model: Any = None,
    ):
        if n_layers is not None and not isinstance(n_layers, int):
            model, n_layers = n_layers, None
        if n_layers is None and model is not None:
            n_layers = model.cfg.n_layers
        self._acts = activations
        self.n_layers = n_layers
        self.has_batch_dim = has_batch_dim
        #: The bridge that made this cache (as in TransformerLens), for helpers that need its weights.
        self.model = model

    @property
    def cache_dict(self) -> dict[str, torch.Tensor]:
        """The underlying ``{hook name: activation}`` dict (live: edits change the cache)."""
        return self._acts

    def resolve(self, key: str | tuple) -> str:
        """The canonical name behind a key, short or long; ``HookNameError`` if nothing cached matches."""
        if isinstance(key, str):
            canonical = canonical_name(key, self._acts)
            if canonical in self._acts:
                return canonical
            if "." not in key and not key.startswith("hook_"):
                return self.resolve((key,))
            raise unknown_hook_error(key, self._acts)
        if not isinstance(key, tuple) or not 1 <= len(key) <= 3 or not isinstance(key[0], str):
            raise HookNameError(f"cache keys are hook names or (name, layer[, sublayer]) tuples, got {key!r}")
        name, layer, sub = (*key, None, None)[:3]
        layer = self._resolve_layer(key, layer)
        canonical = canonical_name(act_name(name, layer, sub), self._acts)
        if canonical in self._acts or layer is None:
            return canonical if canonical in self._acts else self._missing(canonical)
        matches = [k for k in self._acts if k.startswith(f"blocks.{layer}.") and k.endswith(f"hook_{name}")]
        if len(matches) == 1:
            return matches[0]
        return self._missing(canonical)

    def _resolve_layer(self, key: tuple, layer: Any) -> int | None:
        """The layer of a key as a non-negative int: an int, a numpy integer or a one-element integer tensor
        (as TransformerLens takes), negative ones counted from the end."""
        if layer is None:
            return None
        if isinstance(layer, torch.Tensor) and layer.numel() == 1 and not layer.is_floating_point():
            layer = layer.reshape(())
        try:
            if isinstance(layer, bool) or (isinstance(layer, torch.Tensor) and layer.dtype == torch.bool):
                raise TypeError
            layer = operator.index(layer)
        except TypeError:
            raise HookNameError(f"the layer in a cache key must be an integer, got {layer!r} in {key!r}") from None
        n = self.n_layers
        if n is None:
            if layer < 0:
                raise HookNameError(f"cannot resolve the negative layer in {key!r}: this cache does not know n_layers")
            return layer
        if not -n <= layer < n:
            raise HookNameError(
                f"layer {layer} in {key!r} is out of range: this model has {n} layers, so layers go from "
                f"{-n} to {n - 1}"
            )
        return layer % n

    def _missing(self, canonical: str) -> str:
        raise unknown_hook_error(canonical, self._acts)

    def __getitem__(self, key: str | tuple) -> torch.Tensor:
        return self._acts[self.resolve(key)]

    def __contains__(self, key: object) -> bool:
        try:
            self.resolve(key)  # type: ignore[arg-type]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    def __repr__(self) -> str:
        shown = ", ".join(list(self._acts)[:4]) + (", …" if len(self) > 4 else "")
        return f"{type(self).__name__}({len(self)} activations: {shown})"

    def to(self, device: str | torch.device, move_model: bool = False) -> PlainActivationCache:
        """Move every activation to ``device`` (in place); returns the cache.

        ``move_model=True`` (deprecated, as in TransformerLens) moves the model too.
        """
        self._acts = {k: v.to(device) for k, v in self._acts.items()}
        if move_model:
            warnings.warn(
                "ActivationCache.to(move_model=True) is deprecated; move the model yourself",
                DeprecationWarning,
                stacklevel=2,
            )
            if self.model is None:
                raise BridgeError("move_model=True: this cache has no model to move")
            self.model.to(device)
        return self

    def toggle_autodiff(self, mode: bool = False) -> None:
        """Turn torch's autograd on or off globally (``torch.set_grad_enabled(mode)``), as TransformerLens does.

        This is global state; ``with torch.inference_mode():`` is the local alternative.
        """
        logging.getLogger(__name__).warning("Changed the global state, set autodiff to %s", mode)
        torch.set_grad_enabled(mode)

    def remove_batch_dim(self) -> PlainActivationCache:
        """Drop the batch dimension of a batch-of-one cache (in place); returns the cache."""
        if not self.has_batch_dim:
            return self
        sizes = {v.shape[0] for v in self._acts.values()}
        if sizes - {1}:
            raise BridgeError(
                f"remove_batch_dim needs a batch of size 1, but the cache has batch sizes {sorted(sizes)}"
            )
        self._acts = {k: v[0] for k, v in self._acts.items()}
        self.has_batch_dim = False
        return self

    def apply_slice_to_batch_dim(self, batch_slice: Slice | SliceInput) -> PlainActivationCache:
        """A new cache with ``batch_slice`` applied to every activation's batch dimension.

        An integer slice drops the batch dimension (``has_batch_dim`` becomes False).
        """
        batch_slice = Slice.unwrap(batch_slice)
        if not self.has_batch_dim and batch_slice.mode != "identity":
            raise BridgeError("this cache has no batch dimension to slice (remove_batch_dim was applied)")
        sliced = {k: batch_slice.apply(v, dim=0) for k, v in self._acts.items()}
        keeps_batch = self.has_batch_dim and batch_slice.mode != "int"
        return type(self)(sliced, n_layers=self.n_layers, has_batch_dim=keeps_batch, model=self.model)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._acts)
