"""Property tests over batch sizes, lengths, left padding and random hook subsets, on both paths."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.testing import check_hook_subset, check_left_padding, property_settings

SETTINGS = property_settings(max_examples=6)
# Zeroing these may legitimately leave the output unchanged (a zero norm scale gives NaN, not a change;
# a zero ALiBi bias on a tiny model can be invisible).
MAY_NOT_MATTER = ("hook_scale", "hook_alibi")


@pytest.fixture(
    params=[
        "DeepseekV2ForCausalLM",
        "DeepseekV3ForCausalLM",
        "deepseek-v3-variant",
        "DeepseekV32ForCausalLM",
        "GlmMoeDsaForCausalLM",
    ]
)
def pair(request, pair_for):
    return pair_for(request.param)


@SETTINGS
@given(
    lengths=st.lists(st.integers(2, 10), min_size=2, max_size=3),
    seed=st.integers(0, 2**16),
    hooked=st.booleans(),
)
def test_left_padding_gives_each_sequence_its_unpadded_results(pair, lengths, seed, hooked):
    """Each sequence of a left-padded batch gets, on its real tokens, the results it gets alone."""
    # DSA's index scores [b, q, k] and chosen key positions are laid out over key positions, which padding shifts
    # (test_mla_dsa checks them under left padding)
    check_left_padding(pair, lengths, seed, hooked, exclude=("hook_index_scores", "hook_topk_indices"))


@SETTINGS
@given(data=st.data())
def test_random_hook_subsets_cache_and_patch_consistently(pair, data):
    """Caching any subset matches HF and a cache-everything run; identity patches change nothing;
    zeroing one hooked activation changes the output."""
    names = sorted(n for n, h in pair.bridge.hook_dict.items() if h.enabled)
    subset = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=8, unique=True), label="hooks")
    zeroed = data.draw(st.sampled_from(subset), label="zeroed")
    pos = data.draw(st.integers(2, 10), label="pos")
    # DSA's indexer keeps index_topk keys: a prompt no longer than that keeps every key whatever the scores
    topk = getattr(pair.bridge.hf_model.config, "index_topk", None)
    chosen_anyway = ("hook_index_scores", "hook_topk_indices") if topk is not None and pos <= topk else ()
    check_hook_subset(pair, subset, pos, zeroed, (*MAY_NOT_MATTER, *chosen_anyway))
