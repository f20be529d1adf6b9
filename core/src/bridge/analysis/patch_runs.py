"""Many activation patches, run in batched forward passes that skip what a patch cannot change.

A sweep of single patches (one hook, one place each) is the same corrupted forward pass over and over with one
edit. Here the patches are stacked along the batch dimension (``K`` patches of a ``[B, P]`` input make one
``[B·K, ...]`` pass, chunked to a memory budget), and each pass

- starts at the patched layer (``start_at_layer``): earlier blocks are neither run nor changed, so the
  corrupted run's residual stream entering that layer stands in for them;
- starts at the first position a patch changes, where the model keeps a key/value cache that can be cut back
  (attention models): earlier positions of a causal model are unchanged, so their keys and values come from the
  corrupted run's cache and their logits from the corrupted run's logits.

Row ``b·K + k`` of a pass is example ``b`` under patch ``k`` (the order HF's ``batch_repeat_interleave`` gives a
cache). Hooks are attached only for the duration of each pass (``model.hooks``), so an exception or Ctrl-C leaves
none behind.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from bridge.analysis.protocol import HookedModelLike
from bridge.kernel.errors import BadInputError, BridgeError

#: ``edit(rows, offset)``: patch one patch's rows ``[B, ...]`` of a hook's activation in place (or return the
#: patched rows); ``offset`` is the first position the pass computes (positions are counted from it).
Edit = Callable[[torch.Tensor, int], "torch.Tensor | None"]
Evaluate = Callable[[torch.Tensor], torch.Tensor]

DEFAULT_MEMORY_BUDGET = 512 * 2**20
#: A pass that already covers this many (row, position) pairs ends where the next patch starts later.
PASS_TOKENS = 4096
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


@dataclass
class Patch:
    """One patch: an ``edit`` of the activation at ``hook`` (in block ``layer``, None before the blocks) that
    changes nothing before position ``start`` (0 when it may change every position)."""

    hook: str
    layer: int | None
    edit: Edit
    start: int = 0
    #: Positions a pass starting at ``start`` computes (set by ``run_patches``).
    window: int = 0


@dataclass
class _Reference:
    """The corrupted run: logits, the residual stream entering each block, and the key/value cache (if usable)."""

    logits: torch.Tensor  # [B, P, V]
    resid_pre: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, P, d_model]
    cache: Any = None


def parse_memory_budget(budget: int | float | str | None) -> int:
    """Bytes from ``512 * 2**20``, ``"512MiB"``, ``"2GB"`` (None: the default, 512 MiB)."""
    if budget is None:
        return DEFAULT_MEMORY_BUDGET
    if isinstance(budget, int | float) and not isinstance(budget, bool) and budget > 0:
        return int(budget)
    if isinstance(budget, str):
        match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", budget)
        if match and match.group(2).lower() in _UNITS:
            return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    raise BadInputError(f"memory_budget must be a positive number of bytes or a size like '512MiB', got {budget!r}")


def _bytes_per_patch(model: HookedModelLike, batch: int, positions: int, window: int, itemsize: int) -> int:
    """A rough upper bound on what one patch adds to a pass: activations of ``window`` positions through a
    block (patterns over all ``positions`` keys), its key/value cache copy, and its full logits."""
    cfg = model.cfg
    d_mlp = cfg.d_mlp or 4 * cfg.d_model
    per_position = 16 * cfg.d_model + 3 * d_mlp + 3 * max(cfg.n_heads, 1) * positions + 2 * cfg.d_vocab
    cache = 2 * cfg.n_layers * cfg.d_model * (positions - window)
    return itemsize * batch * (window * per_position + cache + positions * cfg.d_vocab)


def _prefix_cache_usable(model: HookedModelLike) -> bool:
    """Whether the model is attention throughout, so a key/value cache can stand in for earlier positions."""
    blocks = list(model.blocks)
    return bool(blocks) and all(hasattr(b, "attn") and not hasattr(b, "mixer") for b in blocks)


def _new_cache(model: HookedModelLike) -> Any:
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=model.hf_model.config)
    except Exception:  # a config DynamicCache cannot read: no prefix skipping
        return None
    if any(cache.is_sliding) or any(cache.is_linear) or not cache.is_croppable:
        return None
    return cache


def _reference_run(model: HookedModelLike, tokens: torch.Tensor, layers: set[int], with_cache: bool) -> _Reference:
    names = [f"blocks.{layer}.hook_resid_pre" for layer in sorted(layers)]
    cache = _new_cache(model) if with_cache else None
    kwargs: dict[str, Any] = {"past_key_values": cache, "use_cache": True} if cache is not None else {}
    with torch.no_grad():
        logits, acts = model.run_with_cache(tokens, names_filter=names, **kwargs)
    if cache is not None and cache.get_seq_length() != tokens.shape[1]:
        cache = None
    return _Reference(logits, {int(n.split(".")[1]): acts[n] for n in names}, cache)


def _chunks(
    patches: list[tuple[int, Patch]], cost: Callable[[int], int], budget: int, max_batch: int | None, rows: int
) -> Iterator[list[tuple[int, Patch]]]:
    """Consecutive runs of patches (sorted by layer, then start) that share a pass: same layer, within the memory
    budget and ``max_batch``. A pass also ends where the start position moves on once it holds ``PASS_TOKENS``
    token positions (``rows`` per patch and position), so that later passes can begin at later positions."""
    chunk: list[tuple[int, Patch]] = []
    for item in patches:
        if chunk:
            first, last = chunk[0][1], chunk[-1][1]
            same_pass = item[1].layer == first.layer
            full = max_batch is not None and len(chunk) >= max_batch
            big = item[1].start != last.start and len(chunk) * rows * (first.window) >= PASS_TOKENS
            if not same_pass or full or big or cost(first.start) * (len(chunk) + 1) > budget:
                yield chunk
                chunk = []
        chunk.append(item)
    if chunk:
        yield chunk


def run_patches(
    model: HookedModelLike,
    tokens: torch.Tensor,
    patches: Sequence[Patch],
    evaluate: Evaluate,
    *,
    verbose: bool = True,
    max_batch: int | None = None,
    memory_budget: int | float | str | None = None,
    skip: bool = True,
    desc: str = "patching",
) -> list[torch.Tensor]:
    """``evaluate(logits)`` of the model on ``tokens`` ``[B, P]`` under each patch, one patch at a time in
    meaning, many per forward pass in fact. ``logits`` is ``[B, P, d_vocab]``, as a plain forward pass gives.

    ``max_batch`` caps the patches per pass; ``memory_budget`` (bytes or ``"512MiB"``) bounds a pass's
    estimated memory; ``skip=False`` runs every pass from the first block and position (the plain batched
    sweep). A progress bar counts patches unless ``verbose=False``.
    """
    if tokens.ndim != 2:
        raise BadInputError(f"patching needs tokens [batch, pos], got shape {tuple(tokens.shape)}")
    if max_batch is not None and max_batch < 1:
        raise BadInputError(f"max_batch must be at least 1, got {max_batch}")
    budget = parse_memory_budget(memory_budget)
    tokens = tokens.to(next(model.hf_model.parameters()).device)
    batch, positions = tokens.shape
    if not skip:
        patches = [Patch(p.hook, None, p.edit, 0) for p in patches]
    layers = {p.layer for p in patches if p.layer is not None}
    prefix = skip and any(p.start > 0 for p in patches) and _prefix_cache_usable(model)
    reference = _reference_run(model, tokens, layers, prefix)
    if reference.cache is None:
        patches = [Patch(p.hook, p.layer, p.edit, 0) for p in patches]
    for patch in patches:
        patch.window = positions - patch.start
    order = sorted(enumerate(patches), key=lambda item: (-1 if item[1].layer is None else item[1].layer, item[1].start))
    itemsize = reference.logits.element_size()

    def cost(start: int) -> int:
        return _bytes_per_patch(model, batch, positions, positions - start, itemsize)

    results: list[torch.Tensor | None] = [None] * len(patches)
    with tqdm(total=len(patches), desc=desc, disable=not verbose, leave=False) as bar:
        for chunk in _chunks(order, cost, budget, max_batch, batch):
            patches_here = [p for _, p in chunk]
            try:
                values = _run_chunk(model, tokens, patches_here, reference, evaluate)
            except BridgeError:
                if reference.cache is None or min(p.start for p in patches_here) == 0:
                    raise
                reference.cache = None  # a hook that refuses a key/value cache (MLA's hook_k): whole passes from now
                values = _run_chunk(model, tokens, patches_here, reference, evaluate)
            for (index, _), value in zip(chunk, values, strict=True):
                results[index] = value
            bar.update(len(chunk))
    return [r for r in results if r is not None]


def _run_chunk(
    model: HookedModelLike, tokens: torch.Tensor, chunk: list[Patch], reference: _Reference, evaluate: Evaluate
) -> list[torch.Tensor]:
    """One forward pass for ``chunk`` (same layer): rows ``b·K + k`` carry patch ``k``."""
    k = len(chunk)
    layer = chunk[0].layer
    start = min(p.start for p in chunk) if reference.cache is not None else 0
    by_hook: dict[str, list[tuple[int, Patch]]] = {}
    for i, patch in enumerate(chunk):
        by_hook.setdefault(patch.hook, []).append((i, patch))

    def hook_for(entries: list[tuple[int, Patch]]) -> Callable:
        def apply(activation: torch.Tensor, hook: Any) -> torch.Tensor:
            activation = activation.clone()
            for i, patch in entries:
                rows = activation[i::k]  # [B, ...]: a view, so an in-place edit lands in `activation`
                edited = patch.edit(rows, start)
                if edited is not None and edited is not rows:
                    activation[i::k] = edited
            return activation

        return apply

    fwd_hooks = [(name, hook_for(entries)) for name, entries in by_hook.items()]
    kwargs: dict[str, Any] = {}
    if start > 0:
        cache = copy.deepcopy(reference.cache)
        cache.crop(start - tokens.shape[1])
        cache.batch_repeat_interleave(k)
        kwargs = {"past_key_values": cache, "use_cache": True}
    window_tokens = tokens[:, start:].repeat_interleave(k, dim=0)  # [B·K, P - start]
    with torch.no_grad(), model.hooks(fwd_hooks):
        if layer is None:
            logits = model(window_tokens, **kwargs)
        else:
            resid = reference.resid_pre[layer][:, start:].repeat_interleave(k, dim=0)  # [B·K, P - start, d_model]
            logits = model(resid, start_at_layer=layer, tokens=window_tokens, **kwargs)
    if start > 0:
        logits = torch.cat([reference.logits[:, :start].repeat_interleave(k, dim=0), logits], dim=1)
    if tuple(logits.shape[:2]) != (tokens.shape[0] * k, tokens.shape[1]):
        raise BridgeError(f"a patched pass returned logits of shape {tuple(logits.shape)}")
    return [evaluate(logits[i::k]) for i in range(k)]


__all__ = ["DEFAULT_MEMORY_BUDGET", "Patch", "parse_memory_budget", "run_patches"]
