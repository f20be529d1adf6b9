"""Attribution patching: gradient estimates of every activation patch at once (``bridge.attribution``).

``attribute(model, clean, corrupt, metric, hooks=...)`` estimates, for each hook and each position (and head,
where the hook has heads), what patching the clean activation into the corrupted run changes in ``metric`` —
the effect TransformerLens's ``get_act_patch_*`` sweeps measure exactly (their value minus the corrupted
run's metric). Methods:

- ``"atp"`` (attribution patching, Nanda 2022): ``(clean - corrupt) · ∂metric/∂activation`` at the corrupted
  run; one forward and one backward pass for every hook.
- ``"atp*"`` (Kramár et al. 2024) adds its two corrections. *QK-fix*: for queries and keys the change of the
  attention pattern is computed exactly (the patched softmax, in batched one-block passes) and only the rest of
  the model is linearized. *GradDrop*: for each layer ℓ the backward pass is repeated with the gradient through
  ℓ's writes to the residual stream dropped, and the estimate is ``Σ_ℓ |AtP_ℓ| / (L - 1)``: a magnitude (≥ 0)
  that direct and indirect effects cannot cancel to zero. Rank by it; it has no sign.
- ``"ig"`` (integrated gradients on the activation, the default): at each hook, the activation is moved from
  corrupted to clean in ``steps`` steps (midpoints) with the rest of the run corrupted, and the gradient is
  averaged along the way; the steps run as one batched pass starting at the hook's layer.
- ``"ig-inputs"`` (EAP-IG's variant): the input embeddings move from corrupted to clean, one pass per step for
  every hook at once.

The result is an ``Attribution``: per hook an estimate shaped ``[pos]``, ``[pos, head]``, or ``[head, dest_pos]``
for patterns (``granularity="element"`` keeps every non-batch axis), and ``stack(name)`` for TransformerLens's
sweep layout ``[n_layers, ...]``. ``rank_correlation`` and ``top_k_agreement`` compare it with exact patching.

Edges: ``attribute_edges`` (EAP, EAP-IG), ``find_circuit``, ``faithfulness`` and ``Circuit.to_json``/``draw``
live in ``bridge.analysis.edges`` and are re-exported here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from bridge.analysis.edges import (
    Circuit,
    EdgeScores,
    Graph,
    attribute_edges,
    build_graph,
    draw_circuit,
    faithfulness,
    find_circuit,
)
from bridge.analysis.patch_runs import parse_memory_budget
from bridge.analysis.patching import hook_name
from bridge.analysis.protocol import HookedModelLike
from bridge.kernel.errors import BadInputError, BridgeError

MetricFn = Callable[[torch.Tensor], torch.Tensor]
HooksArg = str | Sequence[str] | Callable[[str], bool] | None
METHODS = ("atp", "atp*", "ig", "ig-inputs")
#: The hooks ``attribute`` reads by default: the residual stream and every block's writes to it, and heads.
DEFAULT_HOOKS = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "attn.hook_z", "mixer.hook_ssm_out")
_QK_HOOKS = ("attn.hook_q", "attn.hook_k", "attn.hook_rot_q", "attn.hook_rot_k")
_PATTERN_HOOKS = ("hook_pattern", "hook_attn_scores")


def layout(name: str, ndim: int) -> tuple[str, ...]:
    """The axes an estimate for hook ``name`` keeps (besides summing the rest): ``("head", "pos")`` for
    patterns and scores ``[b, h, q, k]``; ``("pos", "head")`` for per-head tensors ``[b, p, h, d]`` (q, k, v, z,
    per-head results and inputs, Mamba-2's per-head states, a mixture's per-slot outputs); ``("pos",)`` otherwise."""
    if name.endswith(_PATTERN_HOOKS):
        return ("head", "pos")
    if name.endswith(("hook_ssm_state", "hook_expert_indices")) and ndim <= 4:
        return ("pos",)
    if ndim >= 4:
        return ("pos", "head")
    return ("pos",)


def _reduce(product: torch.Tensor, name: str, granularity: str) -> torch.Tensor:
    """Sum an elementwise ``[b, ...]`` product down to the estimate's axes."""
    if granularity == "element":
        return product.sum(0)
    axes = layout(name, product.ndim)
    if axes == ("head", "pos"):
        return product.sum(dim=(0, 3))  # [b, h, q, k] -> [h, q]
    if axes == ("pos", "head"):
        return product.sum(dim=(0, *range(3, product.ndim)))  # [b, p, h, ...] -> [p, h]
    return product.sum(dim=(0, *range(2, product.ndim)))  # [b, p, ...] -> [p]


@dataclass
class Attribution(Mapping[str, torch.Tensor]):
    """Estimated patching effects per hook (see ``layout``), with the metric on the clean and corrupted runs."""

    estimates: dict[str, torch.Tensor]
    method: str
    clean_metric: float
    corrupt_metric: float
    n_layers: int
    signed: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.estimates[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.estimates)

    def __len__(self) -> int:
        return len(self.estimates)

    def stack(self, activation_name: str) -> torch.Tensor:
        """``[n_layers, ...]``: the estimates of ``activation_name`` (``"resid_pre"``, ``"z"``,
        ``"mixer.hook_ssm_out"``…) in every layer, as TransformerLens's sweep of it is laid out (per-head
        tensors ``[n_layers, pos, head]``, patterns ``[n_layers, head, dest_pos]``); NaN where a layer lacks it."""
        names = [hook_name(activation_name, layer) for layer in range(self.n_layers)]
        present = [self.estimates[n] for n in names if n in self.estimates]
        if not present:
            raise BadInputError(f"no estimate for {activation_name!r}; attributed: {sorted(self.estimates)}")
        blank = torch.full_like(present[0], math.nan)
        return torch.stack([self.estimates.get(n, blank) for n in names])


# ----------------------------------------------------------------------------- shared plumbing


def _select(model: HookedModelLike, hooks: HooksArg) -> list[str]:
    names = list(model.hook_dict)
    if hooks is None:
        return [n for n in names if n.endswith(DEFAULT_HOOKS) and model.hook_dict[n].enabled]
    if callable(hooks):
        return [n for n in names if hooks(n) and model.hook_dict[n].enabled]
    wanted = [hooks] if isinstance(hooks, str) else list(hooks)
    missing = [n for n in wanted if n not in model.hook_dict]
    if missing:
        raise BadInputError(f"unknown hook points {missing}; pass canonical names (model.hook_dict) or a filter")
    disabled = [n for n in wanted if not model.hook_dict[n].enabled]
    if disabled:
        raise BadInputError(f"opt-in hook points {disabled} are disabled: enable them with model.set_opt_in first")
    return wanted


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "blocks" and len(parts) > 2 and parts[1].isdigit() else None


def _check_tokens(clean: torch.Tensor, corrupt: torch.Tensor) -> None:
    if clean.ndim != 2 or clean.shape != corrupt.shape:
        raise BadInputError(
            f"clean and corrupt must be tokens of one shape [batch, pos], got {tuple(clean.shape)} and "
            f"{tuple(corrupt.shape)}"
        )


def _scalar(metric: MetricFn, logits: torch.Tensor) -> torch.Tensor:
    value = metric(logits)
    if not isinstance(value, torch.Tensor) or value.ndim != 0:
        raise BadInputError("the metric must return a scalar tensor (e.g. a mean over the batch)")
    return value


def _cache(model: HookedModelLike, tokens: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, dict[str, Any]]:
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=names)
    return logits, {n: cache[n] for n in names}


def _write_hooks(model: HookedModelLike, layer: int) -> list[str]:
    """The hook points of block ``layer`` that add to the residual stream (its wiring's algebra terms)."""
    block = model.blocks[layer]
    terms = {term for _sum, parts in getattr(block, "algebra", ()) for term in parts}
    writes = [t for t in terms if t not in ("hook_resid_pre", "hook_resid_mid")]
    return [f"blocks.{layer}.{t}" for t in sorted(writes) if f"blocks.{layer}.{t}" in model.hook_dict]


class _Gradients:
    """One forward pass on ``tokens`` keeping the activations at ``names`` in the graph; ``grads(drop)`` runs a
    backward pass (with the gradient through the writes of layer ``drop`` zeroed) and returns their gradients."""

    def __init__(
        self,
        model: HookedModelLike,
        tokens: torch.Tensor,
        names: list[str],
        metric: MetricFn,
        drop_layers: Sequence[int] = (),
    ) -> None:
        self.acts: dict[str, torch.Tensor] = {}
        self.drop: int | None = None
        fwd = [(n, self._keep) for n in names]
        bwd = [(w, self._dropper(layer)) for layer in drop_layers for w in _write_hooks(model, layer)]
        with torch.enable_grad(), model.hooks(fwd, bwd):
            logits = model(tokens)
            self.value = _scalar(metric, logits)
        self.names = names

    def _keep(self, x: torch.Tensor, hook: Any) -> torch.Tensor:
        if not x.is_floating_point():
            raise BadInputError(f"{hook.name!r} holds integers: it has no gradient to attribute with")
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        self.acts[hook.name] = x
        return x

    def _dropper(self, layer: int) -> Callable:
        def drop(grad: torch.Tensor, hook: Any) -> torch.Tensor | None:
            return torch.zeros_like(grad) if self.drop == layer else None

        return drop

    def grads(self, drop: int | None = None, retain: bool = True) -> dict[str, torch.Tensor]:
        self.drop = drop
        wanted = [n for n in self.names if n in self.acts]
        missing = sorted(set(self.names) - set(wanted))
        if missing:
            raise BridgeError(f"hook points {missing} did not fire on the forward pass")
        found = torch.autograd.grad(self.value, [self.acts[n] for n in wanted], retain_graph=retain, allow_unused=True)
        return {n: (g if g is not None else torch.zeros_like(self.acts[n])) for n, g in zip(wanted, found, strict=True)}


# ----------------------------------------------------------------------------- the methods


def _atp(model, clean, corrupt, metric, names, granularity, clean_acts) -> tuple[dict[str, torch.Tensor], float]:
    run = _Gradients(model, corrupt, names, metric)
    grads = run.grads(retain=False)
    estimates = {n: _reduce((clean_acts[n] - run.acts[n].detach()) * grads[n], n, granularity).detach() for n in names}
    return estimates, float(run.value.detach())


def _grad_drop(model, corrupt, metric, names, granularity, clean_acts, budget, verbose) -> dict[str, torch.Tensor]:
    """AtP*: ``Σ_ℓ |estimate with the gradient through layer ℓ's writes dropped| / (L - 1)``, with the QK-fix
    (the exact pattern change) for query and key hooks."""
    n_layers = model.cfg.n_layers
    qk = [n for n in names if n.endswith(_QK_HOOKS)] if granularity == "auto" else []
    patterns = sorted({_pattern_of(n) for n in qk})
    run = _Gradients(model, corrupt, sorted(set(names) | set(patterns)), metric, range(n_layers))
    total: dict[str, torch.Tensor] = {}
    pattern_grads: dict[str, list[torch.Tensor]] = {p: [] for p in patterns}
    for layer in range(n_layers):
        grads = run.grads(drop=layer, retain=layer < n_layers - 1)
        for n in names:
            if n not in qk:
                estimate = _reduce((clean_acts[n] - run.acts[n].detach()) * grads[n], n, granularity).detach()
                total[n] = total.get(n, 0) + estimate.abs()
        for p in patterns:
            pattern_grads[p].append(grads[p].detach())
    for n in tqdm(qk, desc="AtP* QK-fix", disable=not verbose, leave=False):
        per_drop = _qk_estimates(model, clean_acts[n], corrupt, n, torch.stack(pattern_grads[_pattern_of(n)]), budget)
        total[n] = per_drop.abs().sum(0)
    return {n: v / max(n_layers - 1, 1) for n, v in total.items()}


def _pattern_of(name: str) -> str:
    return name.rsplit(".", 1)[0] + ".hook_pattern"


def _qk_estimates(
    model: HookedModelLike, clean: torch.Tensor, corrupt: torch.Tensor, name: str, grads: torch.Tensor, budget: int
) -> torch.Tensor:
    """QK-fix for one query/key hook: patch the clean activation ``[b, p, heads, d]`` of one (position, head) at a
    time, in batched passes through that block alone, and take the exact change of the pattern times the gradient
    at the pattern (``grads`` ``[drops, b, h, q, k]``, one per GradDrop layer). Returns ``[drops, pos, heads]``."""
    layer = _layer_of(name)
    assert layer is not None
    pattern_name = _pattern_of(name)
    resid_name = f"blocks.{layer}.hook_resid_pre"
    _, acts = _cache(model, corrupt, [resid_name, pattern_name, name])
    base_pattern = acts[pattern_name]  # [b, h, q, k]
    batch, positions = corrupt.shape
    n_heads = acts[name].shape[2]
    cells = list(itertools.product(range(positions), range(n_heads)))
    per_cell = 4 * batch * (3 * base_pattern[0].numel() + 24 * positions * model.cfg.d_model)
    chunk = max(1, budget // max(per_cell, 1))
    out = torch.zeros(grads.shape[0], positions, n_heads)
    for first in range(0, len(cells), chunk):
        part = cells[first : first + chunk]
        k = len(part)
        seen: dict[str, torch.Tensor] = {}

        def patch(x: torch.Tensor, hook: Any, part=part, k=k) -> torch.Tensor:
            x = x.clone()
            for i, (pos, head) in enumerate(part):
                x[i::k, pos, head] = clean[:, pos, head]
            return x

        def keep(x: torch.Tensor, hook: Any, seen: dict[str, torch.Tensor] = seen) -> None:
            seen["pattern"] = x.detach()

        resid = acts[resid_name].repeat_interleave(k, dim=0)  # [b·K, p, d_model]
        tokens = corrupt.repeat_interleave(k, dim=0)
        with torch.no_grad(), model.hooks([(name, patch), (pattern_name, keep)]):
            model(resid, start_at_layer=layer, stop_at_layer=layer + 1, tokens=tokens)
        patterns = seen["pattern"].reshape(batch, k, *base_pattern.shape[1:])  # [b, K, h, q, k]
        delta = patterns - base_pattern.unsqueeze(1)
        values = torch.einsum("bchqk,dbhqk->dc", delta, grads)  # [drops, K]
        for i, (pos, head) in enumerate(part):
            out[:, pos, head] = values[:, i]
    return out


def _ig_activations(model, clean, corrupt, metric, names, granularity, clean_acts, steps, verbose):
    """Per hook: the activation moves from corrupted to clean in ``steps`` midpoints (one batched pass from the
    hook's layer, rows ``b·steps + j``); the gradient is averaged along the path."""
    layers = sorted({layer for n in names if (layer := _layer_of(n)) is not None})
    resid_names = [f"blocks.{layer}.hook_resid_pre" for layer in layers]
    _, corrupt_acts = _cache(model, corrupt, sorted(set(names) | set(resid_names)))
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    tokens = corrupt.repeat_interleave(steps, dim=0)
    estimates = {}
    for name in tqdm(names, desc="IG", disable=not verbose, leave=False):
        layer = _layer_of(name)
        diff = clean_acts[name] - corrupt_acts[name]
        path = corrupt_acts[name].repeat_interleave(steps, dim=0) + einops_alpha(alphas, diff)
        path = path.detach().requires_grad_(True)

        def replace(x: torch.Tensor, hook: Any, path=path) -> torch.Tensor:
            return path

        with torch.enable_grad(), model.hooks([(name, replace)]):
            if layer is None:
                logits = model(tokens)
            else:
                resid = corrupt_acts[f"blocks.{layer}.hook_resid_pre"].repeat_interleave(steps, dim=0)
                logits = model(resid, start_at_layer=layer, tokens=tokens)
            total = sum(_scalar(metric, logits[j::steps]) for j in range(steps))
        (grad,) = torch.autograd.grad(total, [path])
        mean_grad = grad.reshape(corrupt.shape[0], steps, *grad.shape[1:]).mean(1)
        estimates[name] = _reduce(diff * mean_grad, name, granularity).detach()
    return estimates


def einops_alpha(alphas: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """``alphas[j] · diff[b]`` at row ``b·steps + j`` (``[b·steps, ...]``)."""
    steps = alphas.shape[0]
    scaled = alphas.view(1, steps, *([1] * (diff.ndim - 1))) * diff.unsqueeze(1)  # [b, steps, ...]
    return scaled.reshape(diff.shape[0] * steps, *diff.shape[1:])


def _ig_inputs(model, clean, corrupt, metric, names, granularity, clean_acts, steps, verbose):
    """EAP-IG's path: the embeddings (the residual stream entering block 0) move from corrupted to clean; the
    gradient at every hook is averaged over the steps (midpoints)."""
    entry = "blocks.0.hook_resid_pre"
    _, corrupt_acts = _cache(model, corrupt, sorted(set(names) | {entry}))
    _, clean_entry = _cache(model, clean, [entry])
    total: dict[str, torch.Tensor] = {}
    for j in tqdm(range(steps), desc="IG (inputs)", disable=not verbose, leave=False):
        alpha = (j + 0.5) / steps
        start = corrupt_acts[entry] + alpha * (clean_entry[entry] - corrupt_acts[entry])

        def entry_hook(x: torch.Tensor, hook: Any, start=start) -> torch.Tensor:
            return start.detach().requires_grad_(True)

        run = _GradientsFrom(model, corrupt, names, metric, (entry, entry_hook))
        for n, g in run.grads().items():
            total[n] = total.get(n, 0) + g / steps
    return {n: _reduce((clean_acts[n] - corrupt_acts[n]) * total[n], n, granularity).detach() for n in names}


class _GradientsFrom(_Gradients):
    """``_Gradients`` with one more forward hook run first (the interpolated input)."""

    def __init__(self, model, tokens, names, metric, first: tuple[str, Callable]) -> None:
        self.acts = {}
        self.drop = None
        fwd = [first] + [(n, self._keep) for n in names]
        with torch.enable_grad(), model.hooks(fwd):
            self.value = _scalar(metric, model(tokens))
        self.names = names


def attribute(
    model: HookedModelLike,
    clean: torch.Tensor,
    corrupt: torch.Tensor,
    metric: MetricFn,
    hooks: HooksArg = None,
    method: str = "ig",
    steps: int = 5,
    granularity: str = "auto",
    verbose: bool = True,
    memory_budget: int | float | str | None = None,
) -> Attribution:
    """Estimate the effect of patching each clean activation into the corrupted run on ``metric`` (logits →
    scalar), for every hook in ``hooks`` (names, a filter, or None: ``DEFAULT_HOOKS``), at every position (and
    head). ``method``: ``"ig"`` (default), ``"atp"``, ``"atp*"`` or ``"ig-inputs"`` (see the module docstring);
    ``steps``: integration steps for the IG methods. ``clean`` and ``corrupt``: tokens ``[batch, pos]``."""
    if method not in METHODS:
        raise BadInputError(f"method must be one of {METHODS}, got {method!r}")
    if granularity not in ("auto", "element"):
        raise BadInputError(f"granularity must be 'auto' or 'element', got {granularity!r}")
    if steps < 1:
        raise BadInputError(f"steps must be at least 1, got {steps}")
    if getattr(model, "training", False):
        raise BridgeError("attribution needs the model in eval mode: call model.eval() first")
    _check_tokens(clean, corrupt)
    device = next(model.hf_model.parameters()).device
    clean, corrupt = clean.to(device), corrupt.to(device)
    names = _select(model, hooks)
    if not names:
        raise BadInputError("no hook point selected to attribute")
    clean_logits, clean_acts = _cache(model, clean, names)
    clean_metric = float(_scalar(metric, clean_logits))
    with torch.no_grad():
        corrupt_metric = float(_scalar(metric, model(corrupt)))
    signed = True
    if method == "atp":
        estimates, _ = _atp(model, clean, corrupt, metric, names, granularity, clean_acts)
    elif method == "atp*":
        budget = parse_memory_budget(memory_budget)
        estimates = _grad_drop(model, corrupt, metric, names, granularity, clean_acts, budget, verbose)
        signed = False
    elif method == "ig":
        estimates = _ig_activations(model, clean, corrupt, metric, names, granularity, clean_acts, steps, verbose)
    else:
        estimates = _ig_inputs(model, clean, corrupt, metric, names, granularity, clean_acts, steps, verbose)
    return Attribution(
        {n: estimates[n].cpu() for n in names}, method, clean_metric, corrupt_metric, model.cfg.n_layers, signed
    )


# ----------------------------------------------------------------------------- comparing with exact patching


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 with ties averaged."""
    values = values.flatten().double()
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(values.numel(), dtype=torch.float64)
    for value in torch.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def rank_correlation(estimate: torch.Tensor, exact: torch.Tensor) -> float:
    """Spearman's rank correlation of two same-shaped tensors (NaNs in either left out)."""
    estimate, exact = estimate.flatten().double(), exact.flatten().double()
    keep = ~(estimate.isnan() | exact.isnan())
    a, b = _ranks(estimate[keep]), _ranks(exact[keep])
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else math.nan


def top_k_agreement(estimate: torch.Tensor, exact: torch.Tensor, k: int) -> float:
    """The share of the ``k`` largest ``|exact|`` entries that are also among the ``k`` largest ``|estimate|``."""
    estimate, exact = estimate.flatten().abs().nan_to_num(-1.0), exact.flatten().abs().nan_to_num(-1.0)
    k = min(k, exact.numel())
    top_estimate = set(torch.topk(estimate, k).indices.tolist())
    top_exact = set(torch.topk(exact, k).indices.tolist())
    return len(top_estimate & top_exact) / k


__all__ = [
    "DEFAULT_HOOKS",
    "METHODS",
    "Attribution",
    "Circuit",
    "EdgeScores",
    "Graph",
    "attribute",
    "attribute_edges",
    "build_graph",
    "draw_circuit",
    "faithfulness",
    "find_circuit",
    "layout",
    "rank_correlation",
    "top_k_agreement",
]
