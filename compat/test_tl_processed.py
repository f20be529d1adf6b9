"""The logit lens and direct logit attribution as TransformerLens's tutorials run them: on processed weights
(ours ``process_weights()``, TransformerLens's ``enable_compatibility_mode()``), compared call by call."""

import pytest
import torch

from compat.conftest import assert_same

ANSWER = torch.tensor([3, 4])  # per batch element
WRONG = torch.tensor([5, 6])


def test_processed_models_give_the_same_logits(processed_pair):
    assert_same(*processed_pair.both(lambda model: model(processed_pair.clean)))


@pytest.fixture
def caches(processed_pair):
    """``(our cache, TransformerLens's cache)`` of the clean tokens, on processed weights."""
    return tuple(model.run_with_cache(processed_pair.clean)[1] for model in processed_pair.both(lambda m: m))


def test_processed_logit_lens(processed_pair, caches):
    ours, theirs = caches
    mine = processed_pair.ours.unembed(ours.accumulated_resid(incl_mid=True, apply_ln=True, pos_slice=-1))
    reference = processed_pair.theirs.unembed(theirs.accumulated_resid(incl_mid=True, apply_ln=True, pos_slice=-1))
    assert_same(mine, reference)


def test_processed_dla_per_layer_and_per_head(caches):
    def attributions(cache):
        layers, layer_labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
        heads, head_labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
        return (
            layer_labels,
            head_labels,
            cache.apply_ln_to_stack(layers, layer=-1, pos_slice=-1),
            cache.logit_attrs(layers, tokens=ANSWER, incorrect_tokens=WRONG, pos_slice=-1),
            cache.logit_attrs(heads, tokens=ANSWER, incorrect_tokens=WRONG, pos_slice=-1),
        )

    mine, reference = (attributions(cache) for cache in caches)
    assert_same(mine, reference)
