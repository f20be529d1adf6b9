"""Property checks with explicit inputs, for families to drive with ``hypothesis``.

@given(lengths=st.lists(st.integers(2, 12), min_size=2, max_size=3), seed=st.integers(0, 2**16),
       hooked=st.booleans())
def test_left_padding(pair, lengths, seed, hooked):
    check_left_padding(pair, lengths, seed, hooked)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bridge.testing.compare import TOLERANCE
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
    # A batch of 2 and a batch of 1 round differently in fp32 (HF itself: 8e-6 on OLMo-2's MLP activations of ~16,
    # 1.3e-5 on Nemotron's block outputs of ~20, each element's error set by the magnitudes summed into it): a
    # relative term of a few ulps, and an absolute one that grows with the tensor's largest magnitude.
    rtol = 1e-6
    for i, row in enumerate(rows):
        alone_out, alone = pair.bridge.run_with_cache(row[None], names_filter=names, return_type=return_type)
        real = slice(width - len(row), width)
        torch.testing.assert_close(out[i, real], alone_out[0], atol=_scaled(TOLERANCE, alone_out), rtol=rtol)
        for name in alone:
            got = cache[name][i, :, real, real] if name.endswith(SQUARE) else cache[name][i, real]
            expected = alone[name][0]
            torch.testing.assert_close(got, expected, atol=_scaled(TOLERANCE, expected), rtol=rtol, msg=name)


def _scaled(tolerance: float, expected: torch.Tensor) -> float:
    """``tolerance`` times the largest magnitude in ``expected`` when that exceeds 1 (masked scores, at the
    dtype's minimum, aside; integer tensors: ``tolerance``)."""
    if not expected.is_floating_point():
        return tolerance
    magnitudes = expected.abs()
    finite = magnitudes[magnitudes < 1e30]
    return tolerance * max(1.0, finite.max().item() if finite.numel() else 1.0)


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
    atol = _scaled(TOLERANCE, expected)  # re-expressed norms round apart from HF's: error grows with the logits
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)
    assert set(cache) == set(subset)
    for name in subset:  # the everything run takes the seam's eager path: SDPA and eager round apart
        torch.testing.assert_close(
            cache[name], everything[name], atol=_scaled(1e-5, everything[name]), rtol=0, msg=name
        )
    patched = model.run_with_hooks(
        tokens, fwd_hooks=[(n, lambda t, hook: t.clone()) for n in subset], return_type=return_type
    )
    torch.testing.assert_close(patched, expected, atol=atol, rtol=0)
    if zeroed is None or zeroed.endswith(tuple(may_not_matter)):
        return
    ablated = model.run_with_hooks(
        tokens, fwd_hooks=[(zeroed, lambda t, hook: torch.zeros_like(t))], return_type=return_type
    )
    assert not torch.allclose(ablated, expected, atol=1e-6), f"zeroing {zeroed} changed nothing"
