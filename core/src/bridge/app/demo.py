"""The demo behind ``make demo`` and ``bridge demo``: find induction heads in a trained language model.

A plugin can claim other kinds of model through the ``demo`` hook (bridge-vision's image classifiers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from bridge.app.induction import head_scores, repeated_half_loss, repeated_tokens, zero_head
from bridge.kernel import resolution
from bridge.kernel.errors import BridgeError
from bridge.kernel.hooked_model import HookedModel
from bridge.kernel.plugins import get_registry

Printer = Callable[[str], None]


def hook_tree(
    model: HookedModel, layers: Iterable[int] | None = (0,)
) -> list[tuple[str, tuple[int, ...] | None, bool]]:
    """``(name, shape, opt_in)`` of the top-level hooks and of the blocks in ``layers`` (all if None),
    in the order a dry run fires them (hook points that did not fire, such as disabled opt-ins, last). The dry
    run reads 4 tokens, or the adapter's example input for one image for models that do not read tokens alone."""
    examples = get_registry().examples_for(type(model.adapter))
    example = examples.example_input(model.hf_model.config, 1, 0) if examples is not None else None
    tokens = torch.zeros((1, 4), dtype=torch.long) if example is None else dict(example.inputs)
    prefixes = None if layers is None else tuple(f"blocks.{layer}." for layer in layers)

    def wanted(name: str) -> bool:
        return not name.startswith("blocks.") or prefixes is None or name.startswith(prefixes)

    _, cache = model.run_with_cache(tokens, names_filter=wanted, return_type=None)
    silent = [n for n in model.hook_dict if wanted(n) and n not in cache]
    return [(n, tuple(cache[n].shape), False) for n in cache] + [(n, None, model.hook_dict[n].opt_in) for n in silent]


#: Where ``bridge demo`` draws the induction head's pattern when no ``--png`` is given.
DEFAULT_PNG = "examples/output/induction_head.png"


def run_demo(
    model_dir: str | Path,
    png: str | Path | None = None,
    out: Printer = print,
    default_png: bool = False,
    html: str | Path | None = None,
) -> dict:
    """Load the model and run its demo: the demo a plugin offers for it (the ``demo`` hook: bridge-vision's for
    image classifiers), else induction heads for a language model. ``default_png``: draw to the demo's default
    picture when ``png`` is None. ``html``: also write the induction layer's attention patterns as an interactive
    circuitsvis page there (self-contained, viewable offline). Returns the demo's results."""
    model: HookedModel = resolution.load(model_dir)
    cfg = model.cfg
    out(
        f"Loaded {cfg.architecture} from {model_dir} via {type(model.adapter).__name__}: "
        f"{cfg.n_layers} layers, {cfg.n_heads} heads, d_model {cfg.d_model}, {len(model.hook_dict)} hook points"
    )
    text_only = model.adapter.modalities == ("text",)
    dry_run = "one example image" if "image" in model.adapter.modalities else "4 tokens"
    out(f"\nHook points (top level and block 0), shapes from a dry run on {dry_run}:")
    for name, shape, opt_in in hook_tree(model):
        out(f"  {name:<32} {shape if shape else '-'}{'  (opt-in)' if opt_in else ''}")
    offered = get_registry().call_first("demo", model=model, png=png, out=out, default_png=default_png)
    if offered is not None:
        if html is not None:
            out("\n(--html: only the induction-head demo writes HTML)")
        return offered
    if not text_only or model.unembed is None:
        raise BridgeError(
            f"no demo for {cfg.architecture}: the built-in demo needs a language model, and no installed plugin "
            "offers one for this model (`bridge plugins` lists what is installed)."
        )
    if png is None and default_png:
        png = DEFAULT_PNG

    length = 40
    bos = model.tokenizer.bos_token_id
    first_id = max(model.tokenizer.all_special_ids, default=-1) + 1  # sample ordinary tokens only
    tokens = repeated_tokens(16, length, (first_id, cfg.d_vocab), bos, seed=1234)
    scores = head_scores(model, tokens, length)
    out(f"\nHead scores on 16 fresh repeated random sequences (2 × {length} tokens), from cached hook_pattern only:")
    out("  head   induction   previous-token")
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            induction, previous = scores.induction[layer, head], scores.previous_token[layer, head]
            out(f"  {layer}.{head}      {induction:6.3f}         {previous:6.3f}")
    ind_layer, ind_head = scores.top("induction")
    prev_layer, prev_head = scores.top("previous_token")
    out(f"\nInduction head:      {ind_layer}.{ind_head} (score {scores.induction[ind_layer, ind_head]:.3f})")
    out(f"Previous-token head: {prev_layer}.{prev_head} (score {scores.previous_token[prev_layer, prev_head]:.3f})")

    other_head = int(scores.induction[ind_layer].argmin())
    base = repeated_half_loss(model, tokens, length)
    ablated = repeated_half_loss(model, tokens, length, [(f"blocks.{ind_layer}.attn.hook_z", zero_head(ind_head))])
    control = repeated_half_loss(model, tokens, length, [(f"blocks.{ind_layer}.attn.hook_z", zero_head(other_head))])
    out("\nLoss on the repeated half (run_with_hooks, zero-ablating one head at hook_z):")
    out(f"  no ablation                          {base:.4f}")
    out(f"  ablate induction head {ind_layer}.{ind_head}            {ablated:.4f}  ({ablated - base:+.4f})")
    out(f"  ablate head {ind_layer}.{other_head} (lowest induction)  {control:.4f}  ({control - base:+.4f})")
    result = {
        "induction_head": (ind_layer, ind_head),
        "previous_token_head": (prev_layer, prev_head),
        "induction_score": float(scores.induction[ind_layer, ind_head]),
        "previous_token_score": float(scores.previous_token[prev_layer, prev_head]),
        "loss": base,
        "loss_ablated": ablated,
        "loss_control": control,
        "png": None,
        "html": None,
    }
    if png is not None:
        result["png"] = _draw_pattern(model, tokens[:1], ind_layer, ind_head, Path(png), out)
    if html is not None:
        result["html"] = _write_attention_html(model, tokens[:1, : 2 * length // 3], ind_layer, Path(html), out)
    return result


def _write_attention_html(model: HookedModel, tokens: torch.Tensor, layer: int, path: Path, out: Printer) -> str | None:
    """Every head's pattern in ``layer`` on ``tokens`` ``[1, pos]`` as circuitsvis's ``attention_heads`` page."""
    try:
        import circuitsvis as cv
    except ImportError:
        out("\n(circuitsvis not installed: `pip install bridge-core[viz]` to write the HTML)")
        return None
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.attn.hook_pattern")
    names = [f"L{layer}H{head}" for head in range(model.cfg.n_heads)]
    rendered = cv.attention.attention_heads(
        attention=cache["pattern", layer][0],  # [head, q_pos, k_pos]
        tokens=model.to_str_tokens(tokens[0]),
        attention_head_names=names,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendered.local_src)  # the JavaScript inlined: no network needed to view it
    out(f"Wrote layer {layer}'s attention patterns (circuitsvis) to {path}")
    return str(path)


def _draw_pattern(
    model: HookedModel, tokens: torch.Tensor, layer: int, head: int, png: Path, out: Printer
) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        out("\n(matplotlib not installed: `pip install bridge-core[viz]` to draw the pattern)")
        return None
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.attn.hook_pattern", return_type=None)
    pattern = cache["pattern", layer][0, head]
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(pattern.numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set(title=f"blocks.{layer}.attn.hook_pattern, head {head}", xlabel="key position", ylabel="query position")
    fig.colorbar(image, ax=ax)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    out(f"\nWrote the induction head's pattern to {png}")
    return str(png)
