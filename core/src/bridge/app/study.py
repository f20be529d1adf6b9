"""One induction study, run unchanged on a trained model of every family: ``bridge demo --all``.

For each model (``examples/models/induction-*``: GPT-2, Llama, BLOOM, DeepSeek-V2, Mamba-2…, and hybrids such as
``hybrid-induction``, whose attention and SSM blocks are studied each as what it is) the same code measures, from
hooks alone:

1. the loss on a repeated random sequence's second copy, clean (``BOS A A``) and corrupted (``BOS A A'``: the
   second copy replaced by fresh tokens, so nothing there can be copied; the metric still scores ``A``);
2. what carries induction: the heads with the highest induction and previous-token scores (``hook_pattern``) or,
   where there are no heads, the mixer whose output matters most, its SSM channels (Mamba-1) or SSM heads
   (Mamba-2) whose ``hook_y`` patch matters most, and how much their effective attention (``hook_dt``,
   ``hook_x_proj`` or ``hook_B``/``hook_C``) looks at the token after the earlier occurrence;
3. exact activation patching (``bridge.patching``) of the residual stream and of every head (or mixer) by
   position, against attribution patching's estimates of the same patches (``bridge.attribution``: AtP, AtP*,
   IG): rank correlation; and the top-k heads (or SSM channels/heads) patched at every position, exact against
   estimated;
4. the EAP-IG circuit (edges between heads, MLPs, mixers, input and logits) and its faithfulness, measured by
   running the model with every other edge corrupt-ablated.

Results print as one table and draw as one figure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bridge.analysis import attribution, patching
from bridge.analysis.protocol import HookedModelLike
from bridge.app.induction import head_scores, induction_scores, repeated_tokens
from bridge.kernel import resolution
from bridge.kernel.errors import BridgeError

Printer = Callable[[str], None]
#: Where ``bridge demo --all`` looks for models, and where it draws.
DEFAULT_MODELS = "examples/models"
DEFAULT_FIGURE = "examples/output/one_study_every_family.png"


@dataclass
class Study:
    """One model's results (see the module docstring); ``table_row`` is its line in the table."""

    name: str
    architecture: str
    parameters: int
    loss_clean: float
    loss_corrupt: float
    carrier: str
    correlations: dict[str, float] = field(default_factory=dict)
    top_k: dict[str, float] = field(default_factory=dict)
    circuit: Any = None
    seconds: float = 0.0
    resid_patching: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    k: int = 3

    def table_row(self) -> str:
        faith = self.circuit.faithfulness if self.circuit is not None else float("nan")
        edges = len(self.circuit.edges) if self.circuit is not None else 0
        rho = self.correlations
        return (
            f"| {self.name} | {self.architecture} | {self.parameters / 1e3:.0f}k | {self.loss_clean:.2f} / "
            f"{self.loss_corrupt:.2f} | {self.carrier} | {rho.get('atp', float('nan')):.2f} | "
            f"{rho.get('atp*', float('nan')):.2f} | {rho.get('ig', float('nan')):.2f} | "
            f"{self.top_k.get('atp', float('nan')):.2f} / {self.top_k.get('ig', float('nan')):.2f} (k={self.k}) | "
            f"{edges} | {faith:.2f} | {self.seconds:.0f} s |"
        )


TABLE_HEADER = (
    "| model | architecture | params | loss repeated half, clean / corrupted | what carries induction (from hooks) | "
    "ρ AtP | ρ AtP* | ρ IG | top-k units, AtP / IG | EAP-IG edges | faithfulness | time |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def study_inputs(model: HookedModelLike, batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``clean`` = BOS + A + A and ``corrupt`` = BOS + A + A' ``[batch, 1 + 2·length]``: in the corrupted run the
    second copy is fresh tokens, so nothing there can be copied; the metric still scores the clean second copy."""
    bos = model.tokenizer.bos_token_id
    first_id = max(model.tokenizer.all_special_ids, default=-1) + 1
    vocab = (first_id, model.cfg.d_vocab)
    clean = repeated_tokens(batch, length, vocab, bos, seed=seed)
    other = repeated_tokens(batch, length, vocab, bos, seed=seed + 1)
    corrupt = clean.clone()
    corrupt[:, 1 + length :] = other[:, 1 : 1 + length]
    return clean, corrupt


def repeated_half_log_prob(tokens: torch.Tensor, length: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The metric: mean log-probability of the second copy's tokens 2..L (what induction predicts), on logits
    ``[batch, 1 + 2·length, vocab]`` of ``tokens`` or of its corrupted twin (their second copies agree)."""
    targets = tokens[:, length + 2 : 2 * length + 1, None]  # [b, L-1, 1]

    def metric(logits: torch.Tensor) -> torch.Tensor:
        log_probs = logits[:, length + 1 : 2 * length].log_softmax(-1)  # positions L+1..2L-1 predict L+2..2L
        return log_probs.gather(-1, targets.to(log_probs.device)).mean()

    return metric


def _layers_with(model: HookedModelLike, hook: str) -> list[int]:
    return [i for i in range(model.cfg.n_layers) if patching.hook_name(hook, i) in model.hook_dict]


def _mixer_out(model: HookedModelLike) -> str:
    """The hook of an SSM mixer's write: its own ``mixer.hook_ssm_out``, or the block's ``hook_mixer_out`` (hybrids)."""
    return "mixer.hook_ssm_out" if _layers_with(model, "mixer.hook_ssm_out") else "hook_mixer_out"


def _units(model: HookedModelLike) -> list[str]:
    """What mixes tokens: ``"heads"`` (attention patterns) and/or ``"mixers"`` (SSM): a hybrid has both, block by
    block (and may have blocks with only an MLP)."""
    heads, mixers = _layers_with(model, "attn.hook_pattern"), _layers_with(model, "mixer.hook_y")
    if not heads and not mixers:
        raise BridgeError(f"{model.cfg.architecture}: the study needs attention heads or SSM mixers")
    return [kind for kind, layers in (("heads", heads), ("mixers", mixers)) if layers]


def _unit_hooks(model: HookedModelLike, units: str) -> tuple[str, patching.PatchSetter, tuple[str, ...], str, str]:
    """Per kind of unit: its by-position sweep (hook, setter, axes), the hook of its units at every position
    (heads' ``z``, or the SSM channels or heads of ``hook_y``) and the axis that counts them."""
    if units == "heads":
        return "z", patching.layer_pos_head_vector_patch_setter, ("layer", "pos", "head"), "z", "head"
    return _mixer_out(model), patching.layer_pos_patch_setter, ("layer", "pos"), "mixer.hook_y", "channel"


def _exact_and_estimates(
    model: HookedModelLike, clean: torch.Tensor, corrupt: torch.Tensor, metric: Any, kinds: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Exact patching effects (patched minus corrupted metric) and their AtP/AtP*/IG estimates: the residual
    stream and the units (heads and/or mixers) by position, and the units (heads, SSM channels or SSM heads) at
    every position (``"units:<kind>"``; NaN in layers without that kind)."""
    _, clean_cache = model.run_with_cache(clean)
    with torch.no_grad():
        base = float(metric(model(corrupt)))

    def sweep(hook: str, setter: patching.PatchSetter, axes: tuple[str, ...]) -> torch.Tensor:
        return patching.generic_activation_patch(model, corrupt, clean_cache, metric, setter, hook, axes, verbose=False)

    exact = {"resid_pre": sweep("resid_pre", patching.layer_pos_patch_setter, ("layer", "pos"))}
    for kind in kinds:
        by_pos, setter, axes, unit_hook, unit_axis = _unit_hooks(model, kind)
        exact[by_pos] = sweep(by_pos, setter, axes)
        exact[f"units:{kind}"] = sweep(unit_hook, patching.layer_head_vector_patch_setter, ("layer", unit_axis))
    exact = {name: values - base for name, values in exact.items()}
    positional = [name for name in exact if not name.startswith("units:")]
    hooks = [h for name in positional for h in map(partial(patching.hook_name, name), range(model.cfg.n_layers))]
    hooks = [h for h in hooks if h in model.hook_dict]
    estimates: dict[str, dict[str, torch.Tensor]] = {}
    for method in ("atp", "atp*", "ig"):
        found = attribution.attribute(model, clean, corrupt, metric, hooks=hooks, method=method, verbose=False)
        estimates[method] = {name: found.stack(name) for name in positional}
        for kind in kinds:
            unit_hook = _unit_hooks(model, kind)[3]
            unit_hooks = [patching.hook_name(unit_hook, layer) for layer in _layers_with(model, unit_hook)]
            per_unit = attribution.attribute(
                model, clean, corrupt, metric, hooks=unit_hooks, method=method, granularity="element", verbose=False
            )
            # [layer, pos, head, d] or [layer, pos, channel] -> [layer, unit]: every position of a unit at once
            stacked = per_unit.stack(unit_hook)
            estimates[method][f"units:{kind}"] = stacked.sum(dim=1) if stacked.ndim == 3 else stacked.sum(dim=(1, 3))
    return exact, estimates


def _compare(exact: dict[str, torch.Tensor], estimates: dict[str, dict[str, torch.Tensor]], k: int):
    """Spearman ρ over every by-position node (residual stream and units together; NaN where a layer lacks a
    hook left out) and the share of the ``k`` units (of every kind) with the largest exact effect that the
    estimate also ranks top ``k``. AtP* (a magnitude) is compared with |exact|."""
    positional = [name for name in exact if not name.startswith("units:")]
    units = [name for name in exact if name.startswith("units:")]
    truth = torch.cat([exact[name].flatten() for name in positional])
    unit_truth = torch.cat([exact[name].flatten() for name in units])
    correlations, top = {}, {}
    for method, found in estimates.items():
        guess = torch.cat([found[name].flatten() for name in positional])
        correlations[method] = attribution.rank_correlation(guess, truth.abs() if method == "atp*" else truth)
        unit_guess = torch.cat([found[name].flatten() for name in units])
        top[method] = attribution.top_k_agreement(unit_guess, unit_truth, k)
    return correlations, top


def _carrier_heads(model: HookedModelLike, clean: torch.Tensor, length: int) -> str:
    layers = _layers_with(model, "attn.hook_pattern")
    if len(layers) == model.cfg.n_layers:
        scores = head_scores(model, clean, length)
        layer, head = scores.top("induction")
        prev_layer, prev_head = scores.top("previous_token")
        return (
            f"induction head {layer}.{head} ({scores.induction[layer, head]:.2f}), previous-token head "
            f"{prev_layer}.{prev_head} ({scores.previous_token[prev_layer, prev_head]:.2f})"
        )
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_pattern"), return_type=None)
    induction = torch.stack([induction_scores(cache["pattern", i], length) for i in layers])  # [attn layer, head]
    row, head = divmod(int(induction.argmax()), induction.shape[1])
    return f"induction head {layers[row]}.{head} ({induction[row, head]:.2f})"


def _carrier_mixers(
    model: HookedModelLike, clean: torch.Tensor, length: int, exact: dict[str, torch.Tensor], k: int
) -> tuple[str, list[str]]:
    """No heads: the mixer whose output matters most when patched; its SSM channels (Mamba-1) or SSM heads
    (Mamba-2, ``hook_y`` ``[b, p, h, d]``) whose ``hook_y`` patch matters most; and the induction score of each one's
    effective attention (from ``hook_dt`` and ``hook_x_proj``, or ``hook_B``/``hook_C``): the share of its attention
    from a second-copy token to the token after that token's first occurrence."""
    mixers = exact[_mixer_out(model)].sum(dim=1)  # [layer], NaN where a layer has attention instead
    layer = int(mixers.nan_to_num(-math.inf).argmax())
    units = exact["units:mixers"][layer]  # [channel] or [SSM head]
    unit = "SSM heads" if _y_is_per_head(model, layer) else "SSM channels"
    top = torch.topk(units, min(k, units.numel())).indices.tolist()
    share = float(units[top].sum() / units.clamp_min(0).sum())
    carrier = f"mixer {layer}; {unit} {', '.join(map(str, top))} ({share:.0%} of its {unit}' patching effect)"
    notes = [
        "patching each mixer's output at every position changes the log-prob by "
        + ", ".join(f"{float(v):+.2f} (mixer {i})" for i, v in enumerate(mixers) if not v.isnan())
    ]
    effective = getattr(model.blocks[layer].mixer, "effective_attention", None)
    if effective is not None:
        wanted = [f"blocks.{layer}.mixer.hook_{n}" for n in ("dt", "x_proj", "B", "C")]
        _, cache = model.run_with_cache(clean, names_filter=[n for n in wanted if n in model.hook_dict])
        with torch.no_grad():
            M = effective(cache).abs()  # [b, channel or SSM head, t, s]
        queries = torch.arange(length + 1, 2 * length + 1)
        induction = (M[:, :, queries, queries - length + 1] / M[:, :, queries].sum(-1).clamp_min(1e-12)).mean((0, 2))
        notes.append(
            f"mixer {layer}: effective-attention induction score of its top {unit} "
            + ", ".join(f"{c}: {float(induction[c]):.2f}" for c in top)
            + f" (median over its {units.numel()} {unit}: {float(induction.median()):.2f}); rank correlation of "
            f"induction score and patching effect over them {attribution.rank_correlation(induction, units):.2f}"
        )
    return carrier, notes


def _y_is_per_head(model: HookedModelLike, layer: int) -> bool:
    """Whether the mixer's ``hook_y`` is per SSM head ``[b, p, h, d]`` (Mamba-2) rather than per channel."""
    _, cache = model.run_with_cache(torch.zeros(1, 2, dtype=torch.long), names_filter=f"blocks.{layer}.mixer.hook_y")
    return cache[f"blocks.{layer}.mixer.hook_y"].ndim == 4


def _circuit(model: HookedModelLike, clean: torch.Tensor, corrupt: torch.Tensor, metric: Any) -> Any:
    """The EAP-IG circuit: the fewest top edges (4, 8, 16…) whose faithfulness reaches 0.8 (else the largest)."""
    scores = attribution.attribute_edges(model, clean, corrupt, metric, method="eap-ig", steps=5, verbose=False)
    chosen = None
    for n_edges in (4, 8, 16, 32, 64, 128):
        circuit = attribution.find_circuit(scores, n_edges=n_edges)
        if not circuit.edges:
            continue
        attribution.faithfulness(model, circuit, clean, corrupt, metric)
        circuit.details["edges_scored"] = int(scores.graph.allowed.sum())
        chosen = circuit
        if circuit.faithfulness is not None and circuit.faithfulness >= 0.8:
            break
    return chosen


def run_study(model_dir: str | Path, batch: int = 8, length: int = 20, seed: int = 7, out: Printer = print) -> Study:
    """The whole study on one model directory."""
    start = time.perf_counter()
    model: Any = resolution.load(model_dir, attn_implementation="eager")
    model.eval()
    clean, corrupt = study_inputs(model, batch, length, seed)
    metric = repeated_half_log_prob(clean, length)
    with torch.no_grad():
        loss_clean, loss_corrupt = -float(metric(model(clean))), -float(metric(model(corrupt)))
    kinds = _units(model)
    ssm_layers = _layers_with(model, "mixer.hook_y")
    k = 5 if ssm_layers and not _y_is_per_head(model, ssm_layers[0]) else 3  # Mamba-1's channels are many
    exact, estimates = _exact_and_estimates(model, clean, corrupt, metric, kinds)
    correlations, top = _compare(exact, estimates, k)
    carriers: list[str] = []
    notes: list[str] = []
    if "heads" in kinds:
        carriers.append(_carrier_heads(model, clean, length))
    if "mixers" in kinds:
        mixer_carrier, notes = _carrier_mixers(model, clean, length, exact, k)
        carriers.append(mixer_carrier)
    carrier = "; ".join(carriers)
    circuit = _circuit(model, clean, corrupt, metric)
    parameters = sum(p.numel() for p in model.hf_model.parameters())
    name = Path(model_dir).name
    return Study(
        name,
        model.cfg.architecture,
        parameters,
        loss_clean,
        loss_corrupt,
        carrier,
        correlations,
        top,
        circuit,
        time.perf_counter() - start,
        exact["resid_pre"],
        notes,
        k,
    )


def find_models(root: str | Path = DEFAULT_MODELS) -> list[Path]:
    """The trained induction models under ``root`` (``induction-*`` and ``*-induction`` directories, such as
    ``hybrid-induction``), ``induction-2l`` first."""
    candidates = {*Path(root).glob("induction-*"), *Path(root).glob("*-induction")}
    found = sorted(p for p in candidates if (p / "config.json").exists())
    if not found:
        raise BridgeError(f"no induction-* or *-induction model directories under {root}")
    return sorted(found, key=lambda p: (p.name != "induction-2l", p.name))


def run_all(
    root: str | Path = DEFAULT_MODELS, png: str | Path | None = DEFAULT_FIGURE, out: Printer = print, **options: Any
) -> list[Study]:
    """The study on every model under ``root``: prints the table (and each model's notes), draws the figure."""
    studies = []
    for directory in find_models(root):
        out(f"studying {directory} ...")
        studies.append(run_study(directory, out=out, **options))
    out("")
    out(TABLE_HEADER)
    for study in studies:
        out(study.table_row())
    for study in studies:
        for note in study.notes:
            out(f"\n{study.name}: {note}")
        if study.circuit is not None:
            out(f"\n{study.name}: EAP-IG circuit {', '.join(f'{w}->{r}' for w, r, _ in study.circuit.edges[:12])}")
    if png is not None:
        draw_figure(studies, Path(png))
        out(f"\nWrote the figure to {png}")
    return studies


def draw_figure(studies: list[Study], png: Path) -> None:
    """One figure: per model, the exact residual-stream patching effect by layer and position (top), and the
    EAP-IG circuit (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(studies), figsize=(3.6 * len(studies), 8.5), squeeze=False)
    for column, study in enumerate(studies):
        top, bottom = axes[0, column], axes[1, column]
        if study.resid_patching is not None:
            values = study.resid_patching
            limit = float(values.abs().max()) or 1.0
            top.imshow(values.numpy(), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
            top.set(xlabel="position", ylabel="layer", title=f"{study.name}\nresid_pre patching (Δ log-prob)")
            top.set_yticks(range(values.shape[0]))
            top.title.set_fontsize(9)
        if study.circuit is not None:
            study.circuit.draw(
                ax=bottom,
                title=f"EAP-IG, {len(study.circuit.edges)} edges, faithfulness {study.circuit.faithfulness:.2f}",
            )
        else:
            bottom.axis("off")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


__all__ = ["Study", "find_models", "run_all", "run_study"]
