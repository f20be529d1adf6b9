"""Every activation-patching function of ``transformer_lens.patching``, run unchanged on a Bridge
and on TransformerLens's own bridge of the same weights: the sweeps must agree."""

import pytest
import torch
from transformer_lens import patching

from compat.conftest import assert_same, logit_diff

# TransformerLens 4.3.0's own bridge gets these wrong: its numbers differ from a patch done by hand
# on the HF model, which ours matches (test_resid_mid_patching_matches_a_patch_by_hand_on_hf).
TL_WRONG = {"get_act_patch_resid_mid"}

SWEEPS = sorted(
    name for name in dir(patching) if name.startswith("get_act_patch_") and not name.startswith("get_act_patch_direct")
)
DIRECT_PATH = ["get_act_patch_direct_path", "get_act_patch_direct_path_all_sources"]


def test_every_patching_function_is_covered():
    public = {name for name in dir(patching) if name.startswith("get_act_patch_")}
    assert public == {*SWEEPS, *DIRECT_PATH}
    assert len(SWEEPS) == 18  # 15 single sweeps and the three `_every` stacks


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(reason="TransformerLens's own number is wrong", strict=True))
        if name in TL_WRONG
        else name
        for name in SWEEPS
    ],
)
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


def _layers_and_attention(hf_model):
    """The decoder layers and a function giving each layer's attention module (GPT-2 or Llama)."""
    if hasattr(hf_model, "transformer"):
        return hf_model.transformer.h, lambda layer: layer.attn
    return hf_model.model.layers, lambda layer: layer.self_attn


def test_resid_mid_patching_matches_a_patch_by_hand_on_hf(pair):
    """resid_mid = block input + attention output: patching it at (layer, pos) is setting the attention
    output there to clean resid_mid - corrupted block input, done with torch hooks on the HF model."""
    hf = pair.ours.hf_model
    layers, attention = _layers_and_attention(hf)
    n_layers, n_pos = len(layers), pair.clean.shape[1]
    mine = patching.get_act_patch_resid_mid(
        pair.ours, pair.corrupted, pair.ours.run_with_cache(pair.clean)[1], logit_diff
    )

    def block_input_and_attention(tokens, layer):  # both [batch, pos, d_model]
        seen = {}
        handles = [
            layers[layer].register_forward_pre_hook(
                lambda m, args, kwargs: seen.__setitem__("in", (args or (kwargs["hidden_states"],))[0].clone()),
                with_kwargs=True,
            ),
            attention(layers[layer]).register_forward_hook(lambda m, args, out: seen.__setitem__("attn", out[0])),
        ]
        with torch.no_grad():
            hf(tokens)
        for handle in handles:
            handle.remove()
        return seen["in"], seen["attn"]

    expected = torch.zeros(n_layers, n_pos)
    for layer in range(n_layers):
        clean_in, clean_attn = block_input_and_attention(pair.clean, layer)
        corrupted_in, _ = block_input_and_attention(pair.corrupted, layer)
        wanted = clean_in + clean_attn - corrupted_in  # the attention output that gives clean resid_mid
        for pos in range(n_pos):

            def patch(module, args, out, pos=pos, wanted=wanted):
                attn_out = out[0].clone()
                attn_out[:, pos] = wanted[:, pos]
                return (attn_out, *out[1:])

            handle = attention(layers[layer]).register_forward_hook(patch)
            with torch.no_grad():
                expected[layer, pos] = logit_diff(hf(pair.corrupted).logits)
            handle.remove()
    torch.testing.assert_close(mine, expected, atol=1e-5, rtol=0)
