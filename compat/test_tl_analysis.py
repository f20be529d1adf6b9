"""TransformerLens 4.3.0's analysis helpers and cache recipes, run unchanged on a Bridge and on
TransformerLens's own bridge of the same weights: head detection, evals, ``test_prompt``,
``SVDInterpreter``, composition scores, the logit lens and direct logit attribution."""

import pytest
import torch
from transformer_lens import SVDInterpreter, evals, head_detector, utilities

from compat.conftest import assert_same

PROMPT = "the cat sat on the mat and the cat sat on the mat"
ANSWER = torch.tensor([3, 4])  # per batch element
WRONG = torch.tensor([5, 6])


@pytest.mark.parametrize("head_type", ["previous_token_head", "duplicate_token_head", "induction_head"])
def test_detect_head(pair, head_type):
    assert_same(*pair.both(lambda model: head_detector.detect_head(model, PROMPT, head_type)))


def test_evals_sanity_check(pair):
    assert_same(*pair.both(evals.sanity_check))


def test_evals_induction_loss(pair):
    assert_same(*pair.both(lambda model: evals.induction_loss(model, batch_size=2, subseq_len=8, device="cpu")))


def test_test_prompt_prints_what_transformer_lens_prints(pair, capsys):
    def printed(model):
        utilities.test_prompt("the cat sat on the", "mat", model, top_k=5)
        return capsys.readouterr().out

    mine, reference = pair.both(printed)
    assert "Rank:" in reference
    assert mine == reference


@pytest.mark.parametrize(
    ("vector_type", "layer", "head"), [("OV", 1, 2), ("w_in", 0, None), ("w_out", 1, None)], ids=str
)
def test_svd_interpreter(pair, vector_type, layer, head):
    def vectors(model):
        return SVDInterpreter(model).get_singular_vectors(vector_type, layer, num_vectors=3, head_index=head)

    assert_same(*pair.both(vectors))


def test_composition_scores_of_ov_and_qk(pair):
    assert_same(*pair.both(lambda model: utilities.composition_scores(model.OV[0], model.QK[1])))


@pytest.mark.parametrize("kind", ["Q", "K", "V"])
def test_all_composition_scores(pair, kind):
    mine, reference = pair.both(lambda model: model.all_composition_scores(kind))
    assert_same(mine, reference.scores)  # TransformerLens wraps its tensor in a CompositionScores


@pytest.fixture
def caches(pair):
    """``(our cache, TransformerLens's cache)`` of the clean tokens."""
    return pair.ours.run_with_cache(pair.clean)[1], pair.theirs.run_with_cache(pair.clean)[1]


def test_logit_lens_accumulated_resid_with_ln(caches):
    mine, reference = (
        cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, apply_ln=True, return_labels=True)
        for cache in caches
    )
    assert_same(mine, reference)


def test_logit_lens_through_the_unembedding(pair, caches):
    ours, theirs = caches
    mine = pair.ours.unembed(ours.accumulated_resid(apply_ln=True))
    reference = pair.theirs.unembed(theirs.accumulated_resid(apply_ln=True))
    assert_same(mine, reference)


def test_logit_lens_final_entry_is_the_models_logits(pair, caches):
    """Independent of TransformerLens: the last accumulated residual, normed, unembeds to HF's logits."""
    ours, _ = caches
    lens = pair.ours.unembed(ours.accumulated_resid(apply_ln=True)[-1])  # [batch, pos, d_vocab]
    with torch.no_grad():
        logits = pair.ours.hf_model(pair.clean).logits
    torch.testing.assert_close(lens, logits, atol=1e-4, rtol=0)


def test_tokens_to_residual_directions(pair):
    assert_same(*pair.both(lambda model: model.tokens_to_residual_directions(ANSWER)))


def test_dla_decompose_resid(caches):
    mine, reference = (cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True) for cache in caches)
    assert_same(mine, reference)


def test_dla_decompose_resid_sums_to_the_final_residual(pair, caches):
    ours, _ = caches
    parts = ours.decompose_resid(layer=-1)  # [component, batch, pos, d_model]
    torch.testing.assert_close(parts.sum(0), ours["resid_post", pair.ours.cfg.n_layers - 1], atol=1e-4, rtol=0)


def test_dla_stack_head_results(caches):
    mine, reference = (cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True) for cache in caches)
    assert_same(mine, reference)


def test_dla_apply_ln_to_stack(caches):
    mine, reference = (
        cache.apply_ln_to_stack(cache.decompose_resid(layer=-1, pos_slice=-1), layer=-1, pos_slice=-1)
        for cache in caches
    )
    assert_same(mine, reference)


def test_dla_logit_attrs(caches):
    mine, reference = (
        cache.logit_attrs(
            cache.stack_head_results(layer=-1, pos_slice=-1), tokens=ANSWER, incorrect_tokens=WRONG, pos_slice=-1
        )
        for cache in caches
    )
    assert_same(mine, reference)
