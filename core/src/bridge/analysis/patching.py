"""Activation patching with TransformerLens's ``patching`` API, batched: ``bridge.patching``.

Every ``get_act_patch_*`` function of ``transformer_lens.patching`` (and ``generic_activation_patch`` with its
patch setters) with the same signature and the same numbers, so ``from transformer_lens import patching`` becomes
``from bridge import patching``. The difference is speed: patches are stacked along the batch dimension and each
forward pass starts at the patched layer and, on attention models, at the first patched position (see
``bridge.analysis.patch_runs``). Keyword-only extras: ``verbose`` (progress bar), ``max_batch`` (patches per
pass), ``memory_budget`` (bytes or ``"512MiB"`` per pass) and ``skip`` (False: plain batching).

Beyond TransformerLens's hooks, the same sweeps run on any hook point named relative to its block
(``activation_name="mixer.hook_ssm_out"``, ``"attn.hook_kv_latent"``, ``"mlp.hook_expert_weights"``…), and named
helpers cover the state-space, mixture-of-experts and latent-attention hooks (``get_act_patch_mixer_out``,
``get_act_patch_expert_weights``, ``get_act_patch_kv_latent``…). Layers without the hook (the dense layers of a
mixture-of-experts model) are NaN in the result.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import einops
import torch

from bridge.analysis.patch_runs import Patch, run_patches
from bridge.analysis.protocol import HookedModelLike
from bridge.kernel.cache import act_name
from bridge.kernel.errors import BadInputError, BridgeError

MetricFn = Callable[[torch.Tensor], torch.Tensor]
PatchSetter = Callable[[torch.Tensor, Sequence[int], torch.Tensor], torch.Tensor]
#: Index axes whose value is a (query) position: a patch there changes nothing before it.
POSITION_AXES = ("pos", "dest_pos")
_REDUCE_MODES = ("scalar", "mean", "none")


def hook_name(activation_name: str, layer: int) -> str:
    """The hook point of ``activation_name`` in block ``layer``: TransformerLens's short names (``"z"``,
    ``"resid_pre"``), or a name relative to the block (``"mixer.hook_ssm_out"``, ``"hook_resid_mid"``)."""
    if activation_name.startswith("blocks."):
        return activation_name.format(layer=layer)
    if "." in activation_name or activation_name.startswith("hook_"):
        return f"blocks.{layer}.{activation_name}"
    return act_name(activation_name, layer)


def _query_axis(name: str) -> int:
    """The axis holding (query) positions: 2 for patterns and scores ``[b, h, q, k]``, else 1 ``[b, p, ...]``."""
    return 2 if name.endswith(("hook_pattern", "hook_attn_scores")) else 1


# ------------------------------------------------------------------ setters (TransformerLens's, same semantics)


def layer_pos_patch_setter(corrupted_activation, index, clean_activation):
    """Patch ``[:, pos]`` where ``index = [layer, pos]`` (activations ``[batch, pos, ...]``)."""
    assert len(index) == 2
    _layer, pos = index
    corrupted_activation[:, pos, ...] = clean_activation[:, pos, ...]
    return corrupted_activation


def layer_pos_head_vector_patch_setter(corrupted_activation, index, clean_activation):
    """Patch ``[:, pos, head]`` where ``index = [layer, pos, head_index]`` (``[batch, pos, head, ...]``)."""
    assert len(index) == 3
    _layer, pos, head_index = index
    corrupted_activation[:, pos, head_index] = clean_activation[:, pos, head_index]
    return corrupted_activation


def layer_head_vector_patch_setter(corrupted_activation, index, clean_activation):
    """Patch ``[:, :, head]`` where ``index = [layer, head_index]`` (``[batch, pos, head, ...]``)."""
    assert len(index) == 2
    _layer, head_index = index
    corrupted_activation[:, :, head_index] = clean_activation[:, :, head_index]
    return corrupted_activation


def layer_head_pattern_patch_setter(corrupted_activation, index, clean_activation):
    """Patch ``[:, head]`` where ``index = [layer, head_index]`` (patterns ``[batch, head, dest, src]``)."""
    assert len(index) == 2
    _layer, head_index = index
    corrupted_activation[:, head_index, :, :] = clean_activation[:, head_index, :, :]
    return corrupted_activation


def layer_head_pos_pattern_patch_setter(corrupted_activation, index, clean_activation):
    """Patch ``[:, head, dest_pos]`` where ``index = [layer, head_index, dest_pos]``."""
    assert len(index) == 3
    _layer, head_index, dest_pos = index
    corrupted_activation[:, head_index, dest_pos, :] = clean_activation[:, head_index, dest_pos, :]
    return corrupted_activation


def layer_head_dest_src_pos_pattern_patch_setter(corrupted_activation, index, clean_activation):
    """Patch ``[:, head, dest_pos, src_pos]`` where ``index = [layer, head_index, dest_pos, src_pos]``."""
    assert len(index) == 4
    _layer, head_index, dest_pos, src_pos = index
    corrupted_activation[:, head_index, dest_pos, src_pos] = clean_activation[:, head_index, dest_pos, src_pos]
    return corrupted_activation


#: The setters whose patches touch only the positions their index names: a pass may start at that position.
POSITION_LOCAL_SETTERS = frozenset(
    {
        layer_pos_patch_setter,
        layer_pos_head_vector_patch_setter,
        layer_head_vector_patch_setter,
        layer_head_pattern_patch_setter,
        layer_head_pos_pattern_patch_setter,
        layer_head_dest_src_pos_pattern_patch_setter,
    }
)


# ------------------------------------------------------------------ results


@dataclass
class PatchingResult:
    """Per-example (or per-metric) patching results, as TransformerLens 4 returns them for ``reduce="none"``,
    ``baseline=True`` or a mapping of metrics.

    ``values`` is ``[metric?, *axes | n_rows, batch?]`` (the metric axis only for a mapping of metrics, the
    batch axis only when not ``reduced``); ``index_df`` has one row per swept cell (a pandas ``DataFrame``
    when pandas is installed, else a list of index tuples); ``baseline`` is the unpatched corrupted metric.
    """

    values: torch.Tensor
    axis_names: list[str]
    index_df: Any
    metric_names: list[str]
    reduced: bool
    baseline: torch.Tensor | None = None
    has_metric_axis: bool = False
    patch_type_names: list[str] | None = None

    def __getitem__(self, metric_name: str) -> PatchingResult:
        """One metric's result, without the metric axis."""
        if metric_name not in self.metric_names:
            raise KeyError(f"unknown metric {metric_name!r}; have {self.metric_names}")
        if not self.has_metric_axis:
            return self
        i = self.metric_names.index(metric_name)
        baseline = None if self.baseline is None else self.baseline[i]
        return PatchingResult(
            self.values[i],
            self.axis_names,
            self.index_df,
            [metric_name],
            self.reduced,
            baseline,
            False,
            self.patch_type_names,
        )

    def mean(self) -> torch.Tensor:
        """The batch mean per cell."""
        return self.values if self.reduced else self.values.mean(dim=-1)

    def stderr(self) -> torch.Tensor:
        """The standard error of the batch mean per cell (needs ``reduce="none"``)."""
        if self.reduced:
            raise BridgeError("stderr needs per-example values: run the sweep with reduce='none'")
        return self.values.std(dim=-1) / math.sqrt(self.values.shape[-1])

    def _broadcast_baseline(self) -> torch.Tensor:
        if self.baseline is None:
            raise BridgeError("effect needs a baseline: run the sweep with baseline=True")
        lead = 1 if self.has_metric_axis else 0
        middle = self.values.ndim - lead - (0 if self.reduced else 1)
        shape = tuple(self.baseline.shape[:lead]) + (1,) * middle + tuple(self.baseline.shape[lead:])
        return self.baseline.reshape(shape)

    def effect(self) -> torch.Tensor:
        """``values - baseline``: what each patch changes in the corrupted run."""
        return self.values - self._broadcast_baseline()

    def normalized(self, clean_baseline: torch.Tensor) -> torch.Tensor:
        """``(values - corrupted) / (clean - corrupted)``: 0 where a patch does nothing, 1 where it restores the
        clean metric. ``clean_baseline`` is shaped like ``baseline``."""
        corrupted = self._broadcast_baseline()
        clean = torch.as_tensor(clean_baseline, dtype=self.values.dtype).reshape(corrupted.shape)
        return (self.values - corrupted) / (clean - corrupted)


def _index_frame(rows: list[tuple[int, ...]], columns: Sequence[str]) -> Any:
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows, columns=list(columns))


def _index_rows(index_df: Any) -> tuple[list[tuple[int, ...]], list[str]]:
    """The rows and column names of an index table: a pandas DataFrame, or ``(rows, columns)``."""
    if hasattr(index_df, "to_numpy") and hasattr(index_df, "columns"):
        return [tuple(int(v) for v in row) for row in index_df.to_numpy()], [str(c) for c in index_df.columns]
    raise BadInputError("index_df must be a pandas DataFrame with one column per index axis (layer first)")


# ------------------------------------------------------------------ the generic sweep


def _axis_sizes(model: HookedModelLike, activation_name: str, corrupted_tokens: torch.Tensor, clean_cache: Any):
    """The range of each index axis, as TransformerLens computes it (heads: ``n_key_value_heads`` for k and v);
    other axes (``"slot"``, ``"channel"``, ``"index"``) get the size of axis 2 of the clean activation."""
    cfg = model.cfg
    heads = cfg.n_heads
    if activation_name in ("k", "v") and getattr(cfg, "n_key_value_heads", None) is not None:
        heads = cfg.n_key_value_heads
    sizes = {"layer": cfg.n_layers, "pos": corrupted_tokens.shape[-1], "head_index": heads, "head": heads}
    sizes["src_pos"] = sizes["dest_pos"] = sizes["pos"]

    def other(_axis: str) -> int:
        for layer in range(cfg.n_layers):
            name = hook_name(activation_name, layer)
            if name in clean_cache:
                return int(clean_cache[name].shape[2])
        raise BadInputError(f"{activation_name!r} is in no layer of the clean cache: cache it first")

    return lambda axis: sizes[axis] if axis in sizes else other(axis)


def generic_activation_patch(
    model: HookedModelLike,
    corrupted_tokens: torch.Tensor,
    clean_cache: Any,
    patching_metric: MetricFn | Mapping[str, MetricFn],
    patch_setter: PatchSetter,
    activation_name: str,
    index_axis_names: Sequence[str] | None = None,
    index_df: Any = None,
    return_index_df: bool = False,
    *,
    reduce: str = "scalar",
    baseline: bool = False,
    verbose: bool = True,
    max_batch: int | None = None,
    memory_budget: int | float | str | None = None,
    skip: bool = True,
) -> Any:
    """Patch each index of ``activation_name`` from ``clean_cache`` into the run on ``corrupted_tokens`` and
    measure ``patching_metric`` (logits ``[batch, pos, d_vocab]`` → a scalar, or ``[batch]`` with
    ``reduce="mean"``/``"none"``), as ``transformer_lens.patching.generic_activation_patch`` does.

    ``index_axis_names`` (layer first) sweeps every combination; ``index_df`` (a DataFrame, one column per axis)
    sweeps its rows and returns one value per row. Returns a tensor shaped like the swept axes, or a
    ``PatchingResult`` with ``reduce="none"``, ``baseline=True`` or a mapping of metrics.
    """
    if reduce not in _REDUCE_MODES:
        raise BadInputError(f"reduce must be one of {_REDUCE_MODES}, got {reduce!r}")
    metrics = dict(patching_metric) if isinstance(patching_metric, Mapping) else {"metric": patching_metric}
    if not metrics:
        raise BadInputError("patching_metric mapping must contain at least one metric")
    has_metric_axis = isinstance(patching_metric, Mapping)
    want_result = has_metric_axis or reduce == "none" or baseline
    if want_result and return_index_df:
        raise BadInputError("return_index_df only applies to the tensor return; a PatchingResult carries index_df")
    if getattr(model, "training", False):
        raise BridgeError("activation patching needs the model in eval mode: call model.eval() first")

    if index_df is None:
        if index_axis_names is None:
            raise BadInputError("pass index_axis_names (e.g. ('layer', 'pos')) or an index_df")
        axes = list(index_axis_names)
        size_of = _axis_sizes(model, activation_name, corrupted_tokens, clean_cache)
        shape = tuple(size_of(axis) for axis in axes)
        rows = list(itertools.product(*(range(n) for n in shape)))
        flattened = False
    else:
        if index_axis_names is not None:
            raise BadInputError("pass either index_axis_names or index_df, not both")
        rows, axes = _index_rows(index_df)
        shape = (len(rows),)
        flattened = True

    batch = int(corrupted_tokens.shape[0])
    per_example = reduce != "scalar"

    def evaluate(logits: torch.Tensor) -> torch.Tensor:
        outs = []
        for name, fn in metrics.items():
            out = torch.as_tensor(fn(logits)).detach()
            if per_example and (out.ndim != 1 or out.shape[0] != batch):
                raise BadInputError(
                    f"patching_metric {name!r} must return a [batch] tensor of length {batch} under "
                    f"reduce={reduce!r}, got shape {tuple(out.shape)}"
                )
            if not per_example and out.ndim != 0:
                raise BadInputError(
                    f"patching_metric {name!r} must return a scalar under reduce='scalar', got shape "
                    f"{tuple(out.shape)}; return a [batch] tensor and pass reduce='mean' or reduce='none'"
                )
            outs.append(out.float())
        return torch.stack(outs)  # [metric, batch?]

    position_local = patch_setter in POSITION_LOCAL_SETTERS
    patches: list[Patch] = []
    present: list[int] = []
    for c, index in enumerate(rows):
        name = hook_name(activation_name, index[0])
        if name not in clean_cache:
            if name in model.hook_dict or not _exists_elsewhere(model, activation_name):
                raise BadInputError(f"{name!r} is not in the clean cache: cache it in the clean run")
            continue  # this layer has no such hook (a dense layer of an MoE model): NaN
        present.append(c)
        patches.append(_patch_for(name, index[0], list(index), axes, clean_cache[name], patch_setter, position_local))

    values = run_patches(
        model,
        corrupted_tokens,
        patches,
        evaluate,
        verbose=verbose,
        max_batch=max_batch,
        memory_budget=memory_budget,
        skip=skip,
        desc=f"patching {activation_name}",
    )
    store = torch.full((len(metrics), len(rows)) + ((batch,) if per_example else ()), math.nan)
    for c, value in zip(present, values, strict=True):
        store[:, c] = value.cpu()
    store = store.reshape((len(metrics),) + shape + ((batch,) if per_example else ()))

    baseline_values = None
    if baseline:
        with torch.no_grad():
            baseline_values = evaluate(model(corrupted_tokens)).cpu()
    if reduce == "mean":
        store = store.mean(dim=-1)
        baseline_values = None if baseline_values is None else baseline_values.mean(dim=-1)
    if not want_result:
        if return_index_df:
            return store[0], _index_frame(rows, axes) if not flattened else index_df
        return store[0]
    return PatchingResult(
        values=store if has_metric_axis else store[0],
        axis_names=[] if flattened else axes,
        index_df=index_df if flattened else _index_frame(rows, axes),
        metric_names=list(metrics),
        reduced=reduce != "none",
        baseline=None if baseline_values is None else (baseline_values if has_metric_axis else baseline_values[0]),
        has_metric_axis=has_metric_axis,
    )


def _exists_elsewhere(model: HookedModelLike, activation_name: str) -> bool:
    return any(hook_name(activation_name, layer) in model.hook_dict for layer in range(model.cfg.n_layers))


def _patch_for(
    name: str,
    layer: int,
    index: list[int],
    axes: Sequence[str],
    clean: torch.Tensor,
    setter: PatchSetter,
    position_local: bool,
) -> Patch:
    """A ``Patch`` applying ``setter(rows, index, clean)``; for the built-in setters, positions are counted from
    the pass's first position and the pass may start at the patched position."""
    positions = [i for i, axis in enumerate(axes) if axis in POSITION_AXES]
    if not position_local or not positions:
        return Patch(name, layer, lambda rows, _offset: setter(rows, index, clean.to(rows.device)), 0)
    start = min(index[i] for i in positions)
    axis = _query_axis(name)

    def edit(rows: torch.Tensor, offset: int) -> torch.Tensor:
        shifted = [v - offset if i in positions else v for i, v in enumerate(index)]
        window = clean.narrow(axis, offset, clean.shape[axis] - offset).to(rows.device)
        return setter(rows, shifted, window)

    return Patch(name, layer, edit, start)


# ------------------------------------------------------------------ TransformerLens's sweeps


def _sweep(setter: PatchSetter, activation_name: str, axes: tuple[str, ...], doc: str) -> Any:
    fn = partial(generic_activation_patch, patch_setter=setter, activation_name=activation_name, index_axis_names=axes)
    fn.__doc__ = doc
    return fn


get_act_patch_resid_pre = _sweep(
    layer_pos_patch_setter, "resid_pre", ("layer", "pos"), "The residual stream entering each block: [n_layers, pos]."
)
get_act_patch_resid_mid = _sweep(
    layer_pos_patch_setter,
    "resid_mid",
    ("layer", "pos"),
    "The residual stream between attention and MLP: [n_layers, pos]. (A patch of resid_mid reaches both the MLP "
    "and the residual sum, as the name says; TransformerLens 4.3's own bridge gets this one wrong.)",
)
get_act_patch_attn_out = _sweep(
    layer_pos_patch_setter, "attn_out", ("layer", "pos"), "Attention outputs: [n_layers, pos]."
)
get_act_patch_mlp_out = _sweep(layer_pos_patch_setter, "mlp_out", ("layer", "pos"), "MLP outputs: [n_layers, pos].")
get_act_patch_attn_head_out_by_pos = _sweep(
    layer_pos_head_vector_patch_setter,
    "z",
    ("layer", "pos", "head"),
    "Each head's z by position: [n_layers, pos, n_heads].",
)
get_act_patch_attn_head_q_by_pos = _sweep(
    layer_pos_head_vector_patch_setter, "q", ("layer", "pos", "head"), "Queries by position: [n_layers, pos, n_heads]."
)
get_act_patch_attn_head_k_by_pos = _sweep(
    layer_pos_head_vector_patch_setter, "k", ("layer", "pos", "head"), "Keys by position: [n_layers, pos, n_kv_heads]."
)
get_act_patch_attn_head_v_by_pos = _sweep(
    layer_pos_head_vector_patch_setter,
    "v",
    ("layer", "pos", "head"),
    "Values by position: [n_layers, pos, n_kv_heads].",
)
get_act_patch_attn_head_pattern_by_pos = _sweep(
    layer_head_pos_pattern_patch_setter,
    "pattern",
    ("layer", "head_index", "dest_pos"),
    "Each head's pattern row by destination position: [n_layers, n_heads, dest_pos].",
)
get_act_patch_attn_head_pattern_dest_src_pos = _sweep(
    layer_head_dest_src_pos_pattern_patch_setter,
    "pattern",
    ("layer", "head_index", "dest_pos", "src_pos"),
    "Each pattern entry: [n_layers, n_heads, dest_pos, src_pos].",
)
get_act_patch_attn_head_out_all_pos = _sweep(
    layer_head_vector_patch_setter, "z", ("layer", "head"), "Each head's z at every position: [n_layers, n_heads]."
)
get_act_patch_attn_head_q_all_pos = _sweep(
    layer_head_vector_patch_setter,
    "q",
    ("layer", "head"),
    "Each head's queries at every position: [n_layers, n_heads].",
)
get_act_patch_attn_head_k_all_pos = _sweep(
    layer_head_vector_patch_setter, "k", ("layer", "head"), "Each key head at every position: [n_layers, n_kv_heads]."
)
get_act_patch_attn_head_v_all_pos = _sweep(
    layer_head_vector_patch_setter, "v", ("layer", "head"), "Each value head at every position: [n_layers, n_kv_heads]."
)
get_act_patch_attn_head_pattern_all_pos = _sweep(
    layer_head_pattern_patch_setter,
    "pattern",
    ("layer", "head_index"),
    "Each head's whole pattern: [n_layers, n_heads].",
)

_HEAD_TYPES = ["out", "q", "k", "v", "pattern"]
_BLOCK_TYPES = ["resid_pre", "attn_out", "mlp_out"]


def _stack(results: list[Any], axes: list[list[str]], order: list[str], n_heads: int, names: list[str]) -> Any:
    """Stack sweeps on a leading patch-type axis: tensors as TransformerLens does (k/v padded to ``n_heads``),
    ``PatchingResult``s permuted to ``order`` first (``head_index``/``dest_pos`` read as ``head``/``pos``)."""
    rename = {"head_index": "head", "dest_pos": "pos"}
    typed = [r for r in results if isinstance(r, PatchingResult)]
    if not typed:
        tensors = []
        for r, names_of in zip(results, axes, strict=True):
            names_of = [rename.get(n, n) for n in names_of]
            r = r.permute(*[names_of.index(n) for n in order])
            if "head" in order:
                r = torch.nn.functional.pad(
                    r, (0, 0) * (len(order) - 1 - order.index("head")) + (0, n_heads - r.shape[order.index("head")])
                )
            tensors.append(r)
        return torch.stack(tensors)
    values = []
    for r in typed:
        names_of = [rename.get(n, n) for n in r.axis_names]
        lead = 1 if r.has_metric_axis else 0
        v = r.values.permute(
            *range(lead), *[lead + names_of.index(n) for n in order], *range(lead + len(order), r.values.ndim)
        )
        if "head" in order and v.shape[lead + order.index("head")] < n_heads:
            pad = list(v.shape)
            pad[lead + order.index("head")] = n_heads - v.shape[lead + order.index("head")]
            v = torch.cat([v, v.new_zeros(pad)], dim=lead + order.index("head"))
        values.append(v)
    first = typed[0]
    stacked = torch.stack(values, dim=1 if first.has_metric_axis else 0)
    lead = 1 if first.has_metric_axis else 0
    cells = list(stacked.shape[lead : lead + 1 + len(order)])
    return PatchingResult(
        values=stacked,
        axis_names=["patch_type", *order],
        index_df=_index_frame(list(itertools.product(*(range(n) for n in cells))), ["patch_type", *order]),
        metric_names=list(first.metric_names),
        reduced=first.reduced,
        baseline=first.baseline,
        has_metric_axis=first.has_metric_axis,
        patch_type_names=names,
    )


def _run_all(sweeps: list[Any], model, corrupted_tokens, clean_cache, metric, kwargs) -> list[Any]:
    baseline = bool(kwargs.pop("baseline", False))
    results = []
    for i, sweep in enumerate(sweeps):
        out = sweep(model, corrupted_tokens, clean_cache, metric, baseline=baseline and i == 0, **kwargs)
        if baseline and isinstance(out, torch.Tensor):
            axes = list(sweep.keywords["index_axis_names"])
            rows = list(itertools.product(*(range(n) for n in out.shape)))
            out = PatchingResult(out, axes, _index_frame(rows, axes), ["metric"], True)
        results.append(out)
    return results


def get_act_patch_attn_head_all_pos_every(model, corrupted_tokens, clean_cache, metric, **kwargs) -> Any:
    """Every head's out, q, k, v and pattern across all positions: ``[5, n_layers, n_heads]``."""
    sweeps = [
        get_act_patch_attn_head_out_all_pos,
        get_act_patch_attn_head_q_all_pos,
        get_act_patch_attn_head_k_all_pos,
        get_act_patch_attn_head_v_all_pos,
        get_act_patch_attn_head_pattern_all_pos,
    ]
    results = _run_all(sweeps, model, corrupted_tokens, clean_cache, metric, kwargs)
    axes = [list(s.keywords["index_axis_names"]) for s in sweeps]
    return _stack(results, axes, ["layer", "head"], model.cfg.n_heads, _HEAD_TYPES)


def get_act_patch_attn_head_by_pos_every(model, corrupted_tokens, clean_cache, metric, **kwargs) -> Any:
    """Every head's out, q, k, v and pattern by position: ``[5, n_layers, pos, n_heads]``."""
    sweeps = [
        get_act_patch_attn_head_out_by_pos,
        get_act_patch_attn_head_q_by_pos,
        get_act_patch_attn_head_k_by_pos,
        get_act_patch_attn_head_v_by_pos,
        get_act_patch_attn_head_pattern_by_pos,
    ]
    results = _run_all(sweeps, model, corrupted_tokens, clean_cache, metric, kwargs)
    axes = [list(s.keywords["index_axis_names"]) for s in sweeps]
    return _stack(results, axes, ["layer", "pos", "head"], model.cfg.n_heads, _HEAD_TYPES)


def get_act_patch_block_every(model, corrupted_tokens, clean_cache, metric, **kwargs) -> Any:
    """The residual stream entering each block, attention and MLP outputs by position: ``[3, n_layers, pos]``."""
    sweeps = [get_act_patch_resid_pre, get_act_patch_attn_out, get_act_patch_mlp_out]
    results = _run_all(sweeps, model, corrupted_tokens, clean_cache, metric, kwargs)
    return _stack(results, [["layer", "pos"]] * 3, ["layer", "pos"], 0, _BLOCK_TYPES)


# ------------------------------------------------------------------ beyond TransformerLens: SSM, MoE, MLA hooks

get_act_patch_resid_post = _sweep(
    layer_pos_patch_setter, "resid_post", ("layer", "pos"), "The residual stream leaving each block: [n_layers, pos]."
)
get_act_patch_mixer_out = _sweep(
    layer_pos_patch_setter,
    "mixer.hook_ssm_out",
    ("layer", "pos"),
    "Each SSM mixer's output (what it adds to the residual stream) by position: [n_layers, pos].",
)
get_act_patch_ssm_y = _sweep(
    layer_pos_patch_setter,
    "mixer.hook_y",
    ("layer", "pos"),
    "Each SSM mixer's scan output y (before gating) by position: [n_layers, pos].",
)
get_act_patch_ssm_in = _sweep(
    layer_pos_patch_setter,
    "mixer.hook_ssm_in",
    ("layer", "pos"),
    "Each SSM mixer's scan input by position: [n_layers, pos].",
)
get_act_patch_ssm_state = _sweep(
    layer_pos_patch_setter,
    "mixer.hook_ssm_state",
    ("layer", "pos"),
    "Each SSM mixer's per-step state (opt-in: `model.set_opt_in('hook_ssm_state')`) by position: [n_layers, pos].",
)
get_act_patch_expert_weights = _sweep(
    layer_pos_patch_setter,
    "mlp.hook_expert_weights",
    ("layer", "pos"),
    "The routing weights of a mixture of experts by position: [n_layers, pos] (NaN on dense layers).",
)
get_act_patch_expert_outputs = _sweep(
    layer_pos_head_vector_patch_setter,
    "mlp.hook_expert_outputs",
    ("layer", "pos", "slot"),
    "Each routed slot's weighted expert output (opt-in `hook_expert_outputs`) by position: [n_layers, pos, k].",
)
get_act_patch_kv_latent = _sweep(
    layer_pos_patch_setter,
    "attn.hook_kv_latent",
    ("layer", "pos"),
    "Multi-head latent attention's compressed key/value latent by position: [n_layers, pos].",
)
get_act_patch_q_latent = _sweep(
    layer_pos_patch_setter,
    "attn.hook_q_latent",
    ("layer", "pos"),
    "Multi-head latent attention's query latent (q-LoRA models) by position: [n_layers, pos].",
)


def pattern_by_pos_as_pos_head(values: torch.Tensor) -> torch.Tensor:
    """``get_act_patch_attn_head_pattern_by_pos``'s ``[layer, head, pos]`` as ``[layer, pos, head]``."""
    return einops.rearrange(values, "layer head pos -> layer pos head")


__all__ = [
    "POSITION_LOCAL_SETTERS",
    "PatchingResult",
    "generic_activation_patch",
    "get_act_patch_attn_head_all_pos_every",
    "get_act_patch_attn_head_by_pos_every",
    "get_act_patch_attn_head_k_all_pos",
    "get_act_patch_attn_head_k_by_pos",
    "get_act_patch_attn_head_out_all_pos",
    "get_act_patch_attn_head_out_by_pos",
    "get_act_patch_attn_head_pattern_all_pos",
    "get_act_patch_attn_head_pattern_by_pos",
    "get_act_patch_attn_head_pattern_dest_src_pos",
    "get_act_patch_attn_head_q_all_pos",
    "get_act_patch_attn_head_q_by_pos",
    "get_act_patch_attn_head_v_all_pos",
    "get_act_patch_attn_head_v_by_pos",
    "get_act_patch_attn_out",
    "get_act_patch_block_every",
    "get_act_patch_expert_outputs",
    "get_act_patch_expert_weights",
    "get_act_patch_kv_latent",
    "get_act_patch_mixer_out",
    "get_act_patch_mlp_out",
    "get_act_patch_q_latent",
    "get_act_patch_resid_mid",
    "get_act_patch_resid_post",
    "get_act_patch_resid_pre",
    "get_act_patch_ssm_in",
    "get_act_patch_ssm_state",
    "get_act_patch_ssm_y",
    "hook_name",
    "layer_head_dest_src_pos_pattern_patch_setter",
    "layer_head_pattern_patch_setter",
    "layer_head_pos_pattern_patch_setter",
    "layer_head_vector_patch_setter",
    "layer_pos_head_vector_patch_setter",
    "layer_pos_patch_setter",
    "pattern_by_pos_as_pos_head",
]
