"""Property tests over batch sizes, lengths, left padding and random hook subsets."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bridge.testing import make_pair, property_settings
from bridge_mamba import SSM_ADAPTERS as ADAPTERS

SETTINGS = property_settings(max_examples=8)


@pytest.fixture(scope="module", params=ADAPTERS, ids=lambda a: a.architectures[0])
def pair(request, tmp_path_factory):
    adapter = request.param
    pair = make_pair(adapter, directory=tmp_path_factory.mktemp(adapter.architectures[0]))
    pair.bridge.set_opt_in("hook_ssm_state", True)
    return pair


@SETTINGS
@given(batch=st.integers(1, 3), pos=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_logits_and_last_state_match_hf_for_any_shape(pair, batch, pos, seed):
    tokens = pair.tokens(batch, pos, seed)
    reference = pair.reference(tokens, use_cache=True)
    torch.testing.assert_close(pair.bridge(tokens), reference.logits, atol=1e-4, rtol=0)
    logits, cache = pair.bridge.run_with_cache(tokens)
    torch.testing.assert_close(logits, reference.logits, atol=1e-4, rtol=0)
    for layer in range(pair.bridge.cfg.n_layers):
        state = cache[f"blocks.{layer}.mixer.hook_ssm_state"]
        assert state.shape[:2] == (batch, pos)
        expected = reference.cache_params.get_recurrent_state(layer)
        torch.testing.assert_close(state[:, -1], expected, atol=1e-5, rtol=1e-4)


@SETTINGS
@given(lengths=st.lists(st.integers(2, 12), min_size=2, max_size=3), seed=st.integers(0, 2**16))
def test_left_padding_gives_each_sequence_its_unpadded_results(pair, lengths, seed):
    """A left-padded batch with its mask, every hook cached: logits equal HF's on the same batch, and
    each sequence's logits and hooks on its real tokens equal those of running it alone."""
    width = max(lengths)
    rows = [pair.tokens(1, n, seed + i)[0] for i, n in enumerate(lengths)]
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    logits, cache = pair.bridge.run_with_cache(tokens, attention_mask=mask)
    torch.testing.assert_close(logits, pair.reference(tokens, attention_mask=mask).logits, atol=1e-4, rtol=0)
    names = [n for n in cache if n.endswith(("resid_post", "hook_y", "hook_ssm_state", "hook_dt"))]
    for i, row in enumerate(rows):
        alone_logits, alone = pair.bridge.run_with_cache(row[None], names_filter=names)
        real = slice(width - len(row), width)
        torch.testing.assert_close(logits[i, real], alone_logits[0], atol=1e-4, rtol=0)
        for name in names:
            torch.testing.assert_close(cache[name][i, real], alone[name][0], atol=1e-4, rtol=1e-4, msg=name)


@SETTINGS
@given(data=st.data())
def test_random_hook_subsets_cache_and_patch_consistently(pair, data):
    """Caching any subset leaves logits unchanged; identity patches do too; cached values equal those of
    a cache-everything run; zeroing any one hook changes the logits."""
    model = pair.bridge
    names = sorted(n for n, h in model.hook_dict.items() if h.enabled)
    subset = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=8, unique=True), label="hooks")
    tokens = pair.tokens(2, data.draw(st.integers(2, 10), label="pos"))
    expected = pair.reference(tokens, use_cache=False).logits
    _, everything = model.run_with_cache(tokens)
    logits, cache = model.run_with_cache(tokens, names_filter=subset)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
    assert set(cache) == set(subset)
    for name in subset:
        torch.testing.assert_close(cache[name], everything[name], atol=1e-5, rtol=1e-5)
    patched = model.run_with_hooks(tokens, fwd_hooks=[(n, lambda t, hook: t.clone()) for n in subset])
    torch.testing.assert_close(patched, expected, atol=1e-4, rtol=0)
    zeroed = data.draw(st.sampled_from([n for n in subset if not n.endswith("hook_scale")] or names), label="zero")
    changed = model.run_with_hooks(tokens, fwd_hooks=[(zeroed, lambda t, hook: t * 0.0)])
    assert not torch.allclose(changed, expected, atol=1e-6), f"zeroing {zeroed} changed nothing"
