"""``bridge demo`` on a hybrid language model: which kind of layer carries induction, from hooks alone.

On repeated random sequences (BOS, a random segment, the same segment again) it reads every attention layer's
``hook_pattern`` for per-head induction and previous-token scores, then zero-ablates, one at a time, each layer's
token mixer (``hook_attn_out`` or ``hook_mixer_out``) and the best and worst induction heads (``attn.hook_z``),
and reports the loss on the repeated half each time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

Printer = Callable[[str], None]
SEGMENT = 40
BATCH = 16


def is_hybrid_language_model(model: Any) -> bool:
    """A language model whose layers include attention and some other token mixer (``cfg.layer_types``)."""
    kinds = model.cfg.layer_types or []
    parts = {part for kind in kinds for part in kind.split("+")}
    return model.unembed is not None and "attention" in parts and bool(parts - {"attention", "mlp", "moe"})


def repeated_tokens(model: Any, seed: int = 1234) -> torch.Tensor:
    """``[BATCH, 1 + 2·SEGMENT]``: BOS, random ordinary tokens, the same again."""
    tokenizer = model.tokenizer
    first = max(tokenizer.all_special_ids, default=-1) + 1 if tokenizer is not None else 1
    generator = torch.Generator().manual_seed(seed)
    half = torch.randint(first, model.cfg.d_vocab, (BATCH, SEGMENT), generator=generator)
    bos = getattr(tokenizer, "bos_token_id", None)
    parts = [half, half] if bos is None else [torch.full((BATCH, 1), bos), half, half]
    return torch.cat(parts, dim=1)


def repeated_loss(model: Any, tokens: torch.Tensor, fwd_hooks: list = ()) -> float:
    """Mean next-token loss predicting tokens 2..SEGMENT of the second copy."""
    per_token = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks), return_type="loss", loss_per_token=True)
    return per_token[:, -(SEGMENT - 1) :].mean().item()


def _zero(t: torch.Tensor, hook: Any) -> torch.Tensor:
    return torch.zeros_like(t)


def _zero_head(head: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    def hook(z: torch.Tensor, hook: Any) -> torch.Tensor:
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    return hook


def head_scores(model: Any, tokens: torch.Tensor, layers: list[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per attention layer: induction and previous-token score of each head ``[n_heads]`` from ``hook_pattern``."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in layers]
    _, cache = model.run_with_cache(tokens, names_filter=names, return_type=None)
    offset = tokens.shape[1] - 2 * SEGMENT
    queries = torch.arange(offset + SEGMENT, offset + 2 * SEGMENT)
    previous = torch.arange(1, tokens.shape[1])
    scores = {}
    for layer, name in zip(layers, names, strict=True):
        pattern = cache[name]  # [b, h, q, k]
        induction = pattern[:, :, queries, queries - SEGMENT + 1].mean(dim=(0, 2))
        scores[layer] = (induction, pattern[:, :, previous, previous - 1].mean(dim=(0, 2)))
    return scores


def run_hybrid_demo(model: Any, png: Path | None, out: Printer) -> dict[str, Any]:
    kinds = list(model.cfg.layer_types)
    out(f"\nLayer kinds (cfg.layer_types): {', '.join(f'{i}: {k}' for i, k in enumerate(kinds))}")
    tokens = repeated_tokens(model)
    attention_layers = [i for i, kind in enumerate(kinds) if "attn" in dict(model.blocks[i].named_children())]
    scores = head_scores(model, tokens, attention_layers)
    out(f"\nAttention heads on {BATCH} repeated random sequences (2 × {SEGMENT} tokens), from cached hook_pattern:")
    out("  head   induction   previous-token")
    for layer, (induction, previous) in scores.items():
        for head in range(len(induction)):
            out(f"  {layer}.{head}      {induction[head]:6.3f}         {previous[head]:6.3f}")
    best = max(((layer, int(s[0].argmax()), float(s[0].max())) for layer, s in scores.items()), key=lambda x: x[2])
    layer, head, score = best
    worst = int(scores[layer][0].argmin())

    base = repeated_loss(model, tokens)
    out("\nLoss on the repeated half with one thing zero-ablated (run_with_hooks):")
    out(f"  {'nothing ablated':<58}{base:.4f}")
    layer_losses = {}
    for i, kind in enumerate(kinds):
        write = "hook_attn_out" if i in attention_layers else "hook_mixer_out"
        if write not in dict(model.blocks[i].named_children()):
            continue
        loss = repeated_loss(model, tokens, [(f"blocks.{i}.{write}", _zero)])
        layer_losses[i] = loss
        out(f"  block {i} ({kind}) token mixer, blocks.{i}.{write}".ljust(60) + f"{loss:.4f}  ({loss - base:+.4f})")
    ablated = repeated_loss(model, tokens, [(f"blocks.{layer}.attn.hook_z", _zero_head(head))])
    control = repeated_loss(model, tokens, [(f"blocks.{layer}.attn.hook_z", _zero_head(worst))])
    out(f"  head {layer}.{head} (top induction), hook_z".ljust(60) + f"{ablated:.4f}  ({ablated - base:+.4f})")
    out(f"  head {layer}.{worst} (least induction), hook_z".ljust(60) + f"{control:.4f}  ({control - base:+.4f})")

    others = {i: loss for i, loss in layer_losses.items() if i not in attention_layers}
    out(f"\nInduction is carried by attention: head {layer}.{head} of block {layer} ({kinds[layer]}) attends from each")
    out(f"repeated token to the token after its first occurrence (score {score:.3f}); zeroing it raises the loss")
    out(f"on the repeated half from {base:.3f} to {ablated:.3f}.")
    if others:
        key = max(others, key=others.get)
        positional = model.cfg.positional_embedding_type in ("none", None)
        reason = " (the attention has no positional encoding, so the previous token it matches on comes from here)"
        out(
            f"Block {key} ({kinds[key]}) feeds it: zeroing its output raises the loss to {others[key]:.3f}"
            + (reason if positional and key < layer else "")
            + "."
        )
    result = {
        "layer_types": kinds,
        "induction_head": (layer, head),
        "induction_layer_kind": kinds[layer],
        "induction_score": score,
        "loss": base,
        "loss_ablated": ablated,
        "loss_control": control,
        "layer_ablation_losses": layer_losses,
        "png": None,
    }
    if png is not None:
        result["png"] = _draw(model, tokens[:1], layer, head, Path(png), out)
    return result


def _draw(model: Any, tokens: torch.Tensor, layer: int, head: int, png: Path, out: Printer) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        out("\n(matplotlib not installed: `pip install bridge-core[viz]` to draw the pattern)")
        return None
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.attn.hook_pattern", return_type=None)
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, head]
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(pattern.numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set(title=f"blocks.{layer}.attn.hook_pattern, head {head}", xlabel="key position", ylabel="query position")
    fig.colorbar(image, ax=ax)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    out(f"\nWrote the induction head's pattern to {png}")
    return str(png)
