"""Every activation-patching function of ``transformer_lens.patching``, run unchanged on a Bridge
and on TransformerLens's own bridge of the same weights: the sweeps must agree."""

import pytest
from transformer_lens import patching

from compat.conftest import assert_same, logit_diff

SWEEPS = sorted(
    name for name in dir(patching) if name.startswith("get_act_patch_") and not name.startswith("get_act_patch_direct")
)
DIRECT_PATH = ["get_act_patch_direct_path", "get_act_patch_direct_path_all_sources"]


def test_every_patching_function_is_covered():
    public = {name for name in dir(patching) if name.startswith("get_act_patch_")}
    assert public == {*SWEEPS, *DIRECT_PATH}
    assert len(SWEEPS) == 18  # 15 single sweeps and the three `_every` stacks


@pytest.mark.parametrize("name", SWEEPS)
def test_patching_sweep_matches_transformer_lens(pair, name):
    sweep = getattr(patching, name)

    def run(model):
        _, clean_cache = model.run_with_cache(pair.clean)
        return sweep(model, pair.corrupted, clean_cache, logit_diff)

    assert_same(*pair.both(run))


def test_generic_activation_patch_with_a_custom_setter_matches_transformer_lens(pair):
    def run(model):
        _, clean_cache = model.run_with_cache(pair.clean)
        return patching.generic_activation_patch(
            model,
            pair.corrupted,
            clean_cache,
            logit_diff,
            patch_setter=patching.layer_pos_patch_setter,
            activation_name="resid_post",
            index_axis_names=("layer", "pos"),
        )

    assert_same(*pair.both(run))


@pytest.mark.parametrize("name", DIRECT_PATH)
def test_direct_path_patching_matches_transformer_lens(pair, name):
    direct = getattr(patching, name)
    extra = {"src_layer": 0, "src_head": 1} if name == "get_act_patch_direct_path" else {}

    def run(model):
        _, clean_cache = model.run_with_cache(pair.clean)
        _, corrupted_cache = model.run_with_cache(pair.corrupted)
        return direct(model, pair.corrupted, clean_cache, corrupted_cache, logit_diff, verbose=False, **extra)

    assert_same(*pair.both(run))
