"""SSM models have no attention or MLP weight views: asking for one says what the blocks hold instead."""

from __future__ import annotations

import pytest

import bridge
from bridge.kernel.components.weight_views import WeightViewError
from bridge.testing import examples_of
from bridge.testing.fixtures import build_tiny_model, tiny_tokenizer
from bridge_mamba import Mamba2Adapter, MambaAdapter


@pytest.mark.parametrize("adapter", [MambaAdapter, Mamba2Adapter])
def test_attention_and_mlp_views_name_the_mixer_parameters(adapter):
    model = bridge.wrap(build_tiny_model(examples_of(adapter).example_config()), tiny_tokenizer())
    for name in ("W_Q", "W_K", "W_O", "b_O", "W_in", "W_out", "OV", "QK"):
        assert not hasattr(model, name), name
    with pytest.raises(WeightViewError, match=r"blocks\.0 has no attention layer.*mixer .*in_proj\.weight"):
        _ = model.W_O
    with pytest.raises(AttributeError, match=r"no MLP, so there is no model\.W_out.*out_proj\.weight"):
        _ = model.W_out
    assert model.W_E is model.hf_model.get_input_embeddings().weight
    assert model.W_U.shape == (model.cfg.d_model, model.cfg.d_vocab)
