"""TransformerLens's per-component parameters on an SSM: what does not exist says what does."""

from __future__ import annotations

import pytest

import bridge
from bridge.testing import examples_of
from bridge.testing.fixtures import build_tiny_model, tiny_tokenizer
from bridge_mamba import MambaAdapter


@pytest.fixture(scope="module")
def model() -> bridge.Bridge:
    return bridge.wrap(build_tiny_model(examples_of(MambaAdapter).example_config()), tiny_tokenizer())


def test_a_mixer_has_no_attention_weights_and_says_what_it_has(model):
    with pytest.raises(
        AttributeError, match=r"blocks.0.mixer .*no weight view 'W_Q'.*HF module MambaMixer \(.*in_proj"
    ):
        _ = model.blocks[0].mixer.W_Q


def test_a_block_without_attention_lists_its_components(model):
    with pytest.raises(AttributeError, match=r"blocks.1 .*no attribute 'attn'.*components: .*mixer"):
        _ = model.blocks[1].attn.W_Q


def test_embedding_norm_and_unembedding_parameters_are_the_hf_ones(model):
    hf = model.hf_model
    assert model.embed.W_E is hf.backbone.embeddings.weight
    assert model.ln_final.w is hf.backbone.norm_f.weight
    assert model.unembed.W_U.data_ptr() == hf.lm_head.weight.data_ptr()


def test_compatibility_mode_folds_nothing_it_cannot(model):
    model.enable_compatibility_mode()  # SSM blocks: no fold_ln, no value biases; the unembedding is centred
    assert model.cfg.extra["weight_processing"] == ["center_unembed"]
