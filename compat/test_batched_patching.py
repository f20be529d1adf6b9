"""``bridge.patching`` (batched, passes skipping unchanged layers and positions) against TransformerLens 4.3's
own ``transformer_lens.patching`` helpers, run on TransformerLens's bridge of the same weights: equal to 1e-5."""

import pytest
import torch
from transformer_lens import patching as tl_patching

from bridge import patching
from compat.conftest import assert_same, logit_diff

SWEEPS = sorted(
    name
    for name in dir(tl_patching)
    if name.startswith("get_act_patch_") and not name.startswith("get_act_patch_direct")
)
# TransformerLens 4.3's bridge patches resid_mid wrongly (compat/test_tl_patching.py shows it against a patch by
# hand on HF): there the reference is TransformerLens's helper run on our bridge.
TL_WRONG = {"get_act_patch_resid_mid"}


def test_every_transformer_lens_sweep_has_a_batched_twin():
    assert all(hasattr(patching, name) for name in [*SWEEPS, "generic_activation_patch"])


@pytest.mark.parametrize("name", SWEEPS)
def test_batched_sweep_equals_transformer_lens(pair, name):
    _, clean_cache = pair.ours.run_with_cache(pair.clean)
    mine = getattr(patching, name)(pair.ours, pair.corrupted, clean_cache, logit_diff, verbose=False)
    model = pair.ours if name in TL_WRONG else pair.theirs
    _, their_cache = model.run_with_cache(pair.clean)
    reference = getattr(tl_patching, name)(model, pair.corrupted, their_cache, logit_diff)
    assert_same(mine, reference, atol=1e-5)


@pytest.mark.parametrize("chunking", [{"max_batch": 3}, {"memory_budget": 1}, {"skip": False}])
def test_chunking_and_skipping_do_not_change_the_numbers(pair, chunking):
    _, clean_cache = pair.ours.run_with_cache(pair.clean)
    mine = patching.get_act_patch_attn_head_by_pos_every(
        pair.ours, pair.corrupted, clean_cache, logit_diff, verbose=False, **chunking
    )
    _, their_cache = pair.theirs.run_with_cache(pair.clean)
    reference = tl_patching.get_act_patch_attn_head_by_pos_every(pair.theirs, pair.corrupted, their_cache, logit_diff)
    assert_same(mine, reference, atol=1e-5)


def per_example(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, 3] - logits[:, -1, 5]  # [batch]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reduce": "none"},
        {"reduce": "mean", "baseline": True},
        {"reduce": "none", "baseline": True},
    ],
)
def test_per_example_results_equal_transformer_lens(pair, kwargs):
    _, clean_cache = pair.ours.run_with_cache(pair.clean)
    _, their_cache = pair.theirs.run_with_cache(pair.clean)
    mine = patching.get_act_patch_resid_pre(
        pair.ours, pair.corrupted, clean_cache, per_example, verbose=False, **kwargs
    )
    theirs = tl_patching.get_act_patch_resid_pre(pair.theirs, pair.corrupted, their_cache, per_example, **kwargs)
    assert mine.axis_names == theirs.axis_names and mine.reduced == theirs.reduced
    assert_same(mine.values, theirs.values, atol=1e-5)
    if theirs.baseline is not None:
        assert_same(mine.baseline, theirs.baseline, atol=1e-5)
        assert_same(mine.effect(), theirs.effect(), atol=1e-5)
    assert mine.index_df.equals(theirs.index_df)


def test_metric_mapping_and_every_stack_equal_transformer_lens(pair):
    metrics = {"diff": per_example, "first": lambda logits: logits[:, -1, 3]}
    _, clean_cache = pair.ours.run_with_cache(pair.clean)
    _, their_cache = pair.theirs.run_with_cache(pair.clean)
    mine = patching.get_act_patch_block_every(
        pair.ours, pair.corrupted, clean_cache, metrics, verbose=False, reduce="mean"
    )
    theirs = tl_patching.get_act_patch_block_every(pair.theirs, pair.corrupted, their_cache, metrics, reduce="mean")
    assert mine.axis_names == theirs.axis_names and mine.metric_names == theirs.metric_names
    assert_same(mine.values, theirs.values, atol=1e-5)
    assert_same(mine["first"].values, theirs["first"].values, atol=1e-5)


def test_index_df_sweep_equals_transformer_lens(pair):
    import pandas as pd

    rows = pd.DataFrame({"layer": [1, 0, 1], "pos": [3, 1, 0], "head": [1, 0, 1]})
    _, clean_cache = pair.ours.run_with_cache(pair.clean)
    _, their_cache = pair.theirs.run_with_cache(pair.clean)
    args = dict(patch_setter=None, activation_name="z", index_df=rows)
    mine = patching.generic_activation_patch(
        pair.ours,
        pair.corrupted,
        clean_cache,
        logit_diff,
        **{**args, "patch_setter": patching.layer_pos_head_vector_patch_setter},
        verbose=False,
    )
    theirs = tl_patching.generic_activation_patch(
        pair.theirs,
        pair.corrupted,
        their_cache,
        logit_diff,
        **{**args, "patch_setter": tl_patching.layer_pos_head_vector_patch_setter},
    )
    assert_same(mine, theirs, atol=1e-5)
