"""Weight processing steps called on their own: ``center_writing_weights`` on a model whose unembedding is tied to
its token embedding must not move the unembedding with it.

Reference: the log-probabilities of the unprocessed model (every step keeps them)."""

import pytest
import torch

import bridge
from bridge.analysis.processing import UntiedEmbeddingsWarning


def log_probs(model, tokens):
    with torch.no_grad():
        return model(tokens).log_softmax(-1)


@pytest.mark.parametrize("step", ["center_writing_weights", "center_unembed"])
def test_a_step_on_its_own_unties_the_embeddings_first(gpt2_dir, step):
    model = bridge.load(gpt2_dir)
    hf = model.hf_model
    assert hf.lm_head.weight is hf.transformer.wte.weight  # GPT-2 ties them
    tokens = torch.randint(1, model.cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(1))
    before = log_probs(model, tokens)
    with pytest.warns(UntiedEmbeddingsWarning):
        getattr(model, step)()
    assert hf.lm_head.weight is not hf.transformer.wte.weight
    assert not hf.config.tie_word_embeddings
    torch.testing.assert_close(log_probs(model, tokens), before, atol=2e-5, rtol=0)  # fp32, |logits| ~ 5
    assert model.cfg.extra["weight_processing"] == [step]


def test_centring_then_folding_keeps_log_probs(gpt2_dir):
    model = bridge.load(gpt2_dir)
    tokens = torch.randint(1, model.cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(2))
    before = log_probs(model, tokens)
    with pytest.warns(UntiedEmbeddingsWarning):
        model.center_writing_weights()
    model.fold_layer_norm()
    model.center_unembed()
    torch.testing.assert_close(log_probs(model, tokens), before, atol=2e-5, rtol=0)
