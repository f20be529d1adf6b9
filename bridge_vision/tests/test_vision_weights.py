"""Weight views on image towers and towers of two-tower models, against the HF parameters; copies and pickles
of a two-tower bridge run as the original."""

import copy
import pickle

import einops
import pytest
import torch

import bridge
from bridge.analysis.model_weights import WeightViewError
from bridge.testing import examples_of
from bridge_vision import CLIPAdapter


def test_attention_views_of_an_image_tower_are_the_hf_projections(model_dirs):
    model = bridge.load(model_dirs["SiglipVisionModel"])
    q_proj = model.hf_model.encoder.layers[1].self_attn.q_proj
    expected = einops.rearrange(q_proj.weight, "(h d) m -> h m d", h=4)
    torch.testing.assert_close(model.W_Q[1], expected, atol=0, rtol=0)
    assert model.OV.shape == (2, 4, 32, 32)
    assert model.cfg.n_ctx == 16 and model.cfg.n_params > 0


def test_two_tower_views_live_on_the_towers(model_dirs):
    model = bridge.load(model_dirs["CLIPModel"])
    out_proj = model.hf_model.text_model.encoder.layers[0].self_attn.out_proj
    torch.testing.assert_close(
        model.text.blocks[0].attn.W_O, einops.rearrange(out_proj.weight, "m (h d) -> h d m", h=4)
    )
    assert model.vision.cfg.n_ctx == 17 and model.text.cfg.d_vocab == 128
    with pytest.raises(WeightViewError, match=r"model.vision.blocks\[i\].attn.W_Q"):
        _ = model.W_Q


def test_two_tower_copies_and_pickles_run_as_the_original(model_dirs):
    model = bridge.load(model_dirs["CLIPModel"])
    inputs = dict(examples_of(CLIPAdapter).example_input(model.hf_model.config).inputs)
    expected = model(inputs)
    hook = lambda t, hook: t * 0.5  # noqa: E731
    model.add_hook("vision.blocks.0.hook_resid_post", hook)
    halved = model(inputs)
    clone = copy.deepcopy(model)
    torch.testing.assert_close(clone(inputs), halved, atol=0, rtol=0)
    model.reset_hooks()
    restored = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(restored(inputs), expected, atol=0, rtol=0)
    assert sorted(restored.hook_dict) == sorted(model.hook_dict)
