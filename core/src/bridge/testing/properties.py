"""Property checks with explicit inputs, for families to drive with ``hypothesis``:

@given(lengths=st.lists(st.integers(2, 12), min_size=2, max_size=3), seed=st.integers(0, 2**16),
       hooked=st.booleans())
def test_left_padding(pair, lengths, seed, hooked):
    check_left_padding(pair, lengths, seed, hooked)

and, at fixed examples, as conformance checks (``check_left_padded_batches``, ``check_hook_subsets``,
``check_input_shapes``), so ``conformance_test`` alone runs them on every adapter.

Tolerances: a batch of 2 and a batch of 1 round differently in float32 (the matrix products block their sums
differently), by an amount that grows with the value's magnitude and the reduction length. Comparisons between
them allow ``TOLERANCE + rounding_bound(max |value|, widest hook)``: float32 eps × the magnitude × the longest
reduction in the model (its widest hook's last dimension). OLMo-2's MLP activations of ~16 through a
reduction of 96 differ by up to 8e-6 between the two, within the bound of 1.9e-4 + 1e-5; a dropped padding mask
moves them by ~1.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Mapping, Sequence

import torch

from bridge.kernel.hooked_model import position_ids_for
from bridge.testing.compare import (
    TOLERANCE,
    ConformanceError,
    conformance_check,
    expect_close,
    not_applicable,
    rounding_bound,
)
from bridge.testing.pair import Pair

#: Hooks that only exist on the eager seam path (caching them changes the path).
SQUARE = ("hook_pattern", "hook_attn_scores")


def check_any_shape(pair: Pair, batch: int, pos: int, seed: int) -> None:
    """Outputs equal HF's for this batch size and length, with no hooks and with every hook cached."""
    tokens = pair.tokens(batch, pos, seed)
    expected = pair.reference_output(tokens)
    torch.testing.assert_close(pair.output(tokens), expected, atol=TOLERANCE, rtol=0)
    return_type = pair.return_type
    out, cache = pair.bridge.run_with_cache(tokens, return_type=return_type)
    torch.testing.assert_close(out, expected, atol=TOLERANCE, rtol=0)
    assert cache["resid_post", -1].shape[:2] == (batch, pos)


def left_padded(pair: Pair, lengths: Sequence[int], seed: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Random sequences of the given lengths, left-padded into one batch with its mask."""
    width = max(lengths)
    rows = [pair.tokens(1, n, seed + i)[0] for i, n in enumerate(lengths)]
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return tokens, mask, rows


def check_left_padding(
    pair: Pair, lengths: Sequence[int], seed: int, hooked: bool, exclude: Sequence[str] = ()
) -> None:
    """Each sequence of a left-padded batch gets, on its real tokens, the logits and every hook value
    it gets alone; ``hooked`` also caches pattern and scores (the eager seam path). ``exclude``: name
    suffixes of hooks not laid out ``[batch, pos, …]`` (a per-key bias, say)."""
    tokens, mask, rows = left_padded(pair, lengths, seed)

    def names(name: str) -> bool:
        return (hooked or not name.endswith(SQUARE)) and not name.endswith(tuple(exclude))

    return_type = pair.return_type
    out, cache = pair.bridge.run_with_cache(tokens, attention_mask=mask, names_filter=names, return_type=return_type)
    width = tokens.shape[1]
    reduction = widest(cache)
    for i, row in enumerate(rows):
        alone_out, alone = pair.bridge.run_with_cache(row[None], names_filter=names, return_type=return_type)
        real = slice(width - len(row), width)
        what = f"{return_type} of sequence {i} (length {len(row)}) in a left-padded batch {list(lengths)} vs alone"
        expect_close(out[i, real], alone_out[0], what, tolerance=reordered(alone_out, reduction))
        for name in alone:
            if not _per_token(cache[name], alone[name], len(rows), width, len(row), name.endswith(SQUARE)):
                continue  # not laid out [batch, pos, ...] (ALiBi's per-key bias): nothing per sequence to compare
            got = cache[name][i, :, real, real] if name.endswith(SQUARE) else cache[name][i, real]
            what = f"{name} of sequence {i} (length {len(row)}) in a left-padded batch {list(lengths)} vs alone"
            expect_close(got, alone[name][0], what, tolerance=reordered(alone[name], reduction))


def _per_token(batched: torch.Tensor, alone: torch.Tensor, batch: int, width: int, length: int, square: bool) -> bool:
    """Whether a hook value is laid out per sequence and position: ``[batch, pos, …]`` (``[batch, h, q, k]`` for
    pattern and scores) in the padded run and ``[1, length, …]`` alone."""
    if square:
        return batched.shape[0] == batch and tuple(batched.shape[-2:]) == (width, width) and alone.shape[-1] == length
    return tuple(batched.shape[:2]) == (batch, width) and tuple(alone.shape[:2]) == (1, length)


def widest(cache: Mapping[str, torch.Tensor]) -> int:
    """The longest reduction behind any cached value: the largest last dimension of any hook (``d_mlp``,
    ``d_model``, a mixer's inner width)."""
    return max([t.shape[-1] for t in cache.values()] + [1])


def reordered(expected: torch.Tensor, reduction: int) -> float:
    """The tolerance between two computations of ``expected`` that differ only in the order of their float sums:
    ``TOLERANCE + rounding_bound(max |expected|, reduction)`` in ``expected``'s dtype."""
    finite = expected.detach()[torch.isfinite(expected.detach())]
    magnitude = float(finite.abs().max()) if finite.numel() else 0.0
    dtype = expected.dtype if expected.is_floating_point() else torch.float32
    return TOLERANCE + rounding_bound(magnitude, reduction, dtype)


def check_hook_subset(
    pair: Pair, subset: Sequence[str], pos: int, zeroed: str | None = None, may_not_matter: Sequence[str] = ()
) -> None:
    """Caching ``subset`` leaves the output equal to HF's and caches what a cache-everything run sees;
    an identity patch on all of them changes nothing; zeroing ``zeroed`` changes the output (unless
    its name ends with one of ``may_not_matter``)."""
    model = pair.bridge
    tokens = pair.tokens(2, pos)
    return_type = pair.return_type
    expected = pair.reference_output(tokens)
    _, everything = model.run_with_cache(tokens, return_type=return_type)
    out, cache = model.run_with_cache(tokens, names_filter=list(subset), return_type=return_type)
    expect_close(out, expected, f"{return_type} with {list(subset)} cached vs HF", tolerance=TOLERANCE)
    if set(cache) != set(subset):
        raise ConformanceError(f"caching {sorted(subset)} cached {sorted(cache)}")
    reduction = widest(everything)
    for name in subset:  # the eager path (everything cached) and the native one (some cached) sum in other orders
        what = f"{name} cached with {len(subset)} hooks vs with every hook"
        expect_close(cache[name], everything[name], what, tolerance=reordered(everything[name], reduction))
    patched = model.run_with_hooks(
        tokens, fwd_hooks=[(n, lambda t, hook: t.clone()) for n in subset], return_type=return_type
    )
    # a patch inside attention moves the layer onto the hooked path, which sums in another order than HF's
    what = f"{return_type} with identity patches on {list(subset)} vs HF"
    expect_close(patched, expected, what, tolerance=reordered(expected, reduction))
    if zeroed is None or zeroed.endswith(tuple(may_not_matter)):
        return
    ablated = model.run_with_hooks(
        tokens, fwd_hooks=[(zeroed, lambda t, hook: torch.zeros_like(t))], return_type=return_type
    )
    assert not torch.allclose(ablated, expected, atol=1e-6), f"zeroing {zeroed} changed nothing"


def _token_model(pair: Pair) -> bool:
    return pair.example_set.example_input(pair.bridge.hf_model.config, 1, 0) is None


@conformance_check(paths=("native",))
def check_left_padded_batches(pair: Pair) -> None:
    """A left-padded batch (lengths 9, 4 and 6) with its attention mask: the output on the real tokens equals
    HF's on the same padded batch (given the positions the bridge gives it), with no hooks and with every hook
    cached (only the unpadded row where the examples say HF itself is not left-padding invariant: Llama 4); and,
    for language models, each sequence's output and every hook value on its real tokens equal those of
    running it alone (``check_left_padding``), with and without the eager-path hooks (pattern and scores) cached.
    (Other text models, a masked LM say, take HF's own positions or ``0..p-1``, which left padding shifts.)"""
    if not _token_model(pair):
        not_applicable(f"{pair.bridge.cfg.architecture} does not read tokens alone")
        return
    lengths = (9, 4, 6)
    tokens, mask, _ = left_padded(pair, lengths, seed=3)
    # positions follow the mask in language models whose adapter counts real tokens (else: HF's own, or 0..p-1)
    language_model = pair.bridge.adapter.output_fields is None and pair.bridge.adapter.position_ids == "real_tokens"
    kwargs: dict = {"attention_mask": mask}
    if language_model and "position_ids" in inspect.signature(pair.reference.forward).parameters:
        kwargs["position_ids"] = position_ids_for(tokens, mask)  # the positions the bridge gives HF
    expected = pair.reference_output(tokens, **kwargs)
    real = mask.bool()
    if not pair.example_set.left_padding_invariant:  # HF's padded rows read unshifted positions: no reference there
        real = real & (mask.sum(dim=1, keepdim=True) == mask.shape[1])

    def on_real(x: torch.Tensor) -> torch.Tensor:  # per-position outputs on the real tokens; a classifier's whole
        return x[real] if tuple(x.shape[:2]) == tuple(real.shape) else x

    plain = pair.bridge(tokens, attention_mask=mask, return_type=pair.return_type)
    expect_close(on_real(plain), on_real(expected), f"{pair.return_type} of a left-padded batch, no hooks, vs HF")
    cached, _ = pair.bridge.run_with_cache(tokens, attention_mask=mask, return_type=pair.return_type)
    what = f"{pair.return_type} of a left-padded batch, every hook cached, vs HF"
    expect_close(on_real(cached), on_real(expected), what)
    if language_model and pair.example_set.left_padding_invariant:
        for hooked in (False, True):
            check_left_padding(pair, lengths, seed=3, hooked=hooked)


#: How many random hook subsets ``check_hook_subsets`` tries, and their largest size.
SUBSETS, SUBSET_SIZE = 4, 8


@conformance_check(paths=("native",))
def check_hook_subsets(pair: Pair) -> None:
    """For a few fixed random subsets of the enabled hook points: caching just that subset leaves the output equal
    to HF's and caches what a cache-everything run caches, and an identity patch on all of them changes nothing
    (``check_hook_subset``). A hook whose shape or value depends on which other hooks are active fails."""
    names = sorted(n for n, h in pair.bridge.hook_dict.items() if h.enabled)
    chooser = random.Random(0)
    for _ in range(SUBSETS):
        subset = chooser.sample(names, min(SUBSET_SIZE, len(names)))
        check_hook_subset(pair, subset, pos=7)


@conformance_check(paths=("native",))
def check_input_shapes(pair: Pair) -> None:
    """Outputs equal HF's for one token, for a batch of three, and for a longer input, with no hooks and with every
    hook cached (``check_any_shape``)."""
    if not _token_model(pair):
        not_applicable(f"{pair.bridge.cfg.architecture} does not read tokens alone")
        return
    context = pair.bridge.cfg.n_ctx or 64
    for batch, pos, seed in ((1, 1, 0), (3, 5, 1), (1, min(33, context), 2)):
        check_any_shape(pair, batch, pos, seed)
