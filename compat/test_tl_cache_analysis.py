"""Every cache-analysis method, with the arguments the recipes vary, against TransformerLens 4.3.0's
``ActivationCache`` on its own bridge of the same weights (values and labels)."""

import pytest

from compat.conftest import assert_same

CALLS = {
    "accumulated_resid_mid_mlp_input": lambda c: c.accumulated_resid(
        1, incl_mid=True, mlp_input=True, apply_ln=True, return_labels=True
    ),
    "accumulated_resid_logit_lens": lambda c: c.accumulated_resid(apply_ln=True, incl_mid=True, return_labels=True),
    "decompose_resid_mlp_input": lambda c: c.decompose_resid(1, mlp_input=True, apply_ln=True, return_labels=True),
    "decompose_resid_attn": lambda c: c.decompose_resid(mode="attn", return_labels=True),
    "stack_head_results_remainder": lambda c: c.stack_head_results(
        1, incl_remainder=True, apply_ln=True, return_labels=True
    ),
    "stack_neuron_results_sliced": lambda c: c.stack_neuron_results(
        1, pos_slice=(1, 4), neuron_slice=[1, 5], return_labels=True, incl_remainder=True
    ),
    "get_neuron_results": lambda c: c.get_neuron_results(1, neuron_slice=3, pos_slice=-1),
    "full_decomposition": lambda c: c.get_full_resid_decomposition(return_labels=True, apply_ln=True),
    "full_decomposition_mlp_input": lambda c: c.get_full_resid_decomposition(
        1, mlp_input=True, return_labels=True, pos_slice=[0, 2]
    ),
    "full_decomposition_mlp_outs": lambda c: c.get_full_resid_decomposition(
        1, mlp_input=True, expand_neurons=False, return_labels=True
    ),
    "stack_activation": lambda c: c.stack_activation("pattern"),
    "apply_ln_to_stack_batch_slice": lambda c: c.apply_ln_to_stack(c.decompose_resid(), batch_slice=1),
    "logit_attrs_single_tokens": lambda c: c.logit_attrs(c.decompose_resid(), 7, incorrect_tokens=9),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_cache_analysis_matches_transformer_lens(pair, call):
    ours = pair.ours.run_with_cache(pair.clean)[1]
    theirs = pair.theirs.run_with_cache(pair.clean)[1]
    assert_same(CALLS[call](ours), CALLS[call](theirs))
