"""Cache analysis on MLA (DeepSeek): heads write through W_O ``[n_heads, d_head_v, d_model]``; dense first
layers have neurons, MoE layers do not."""

import pytest
import torch

from bridge import BridgeError


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@pytest.mark.parametrize("name", ["DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM"])
def test_mla_decompositions_sum_to_the_stream(pair_for, name):
    pair = pair_for(name)
    tokens = pair.tokens(2, 6)
    _, cache = pair.bridge.run_with_cache(tokens)
    hidden = pair.reference(tokens, output_hidden_states=True).hidden_states
    d_head_v = pair.bridge.cfg.d_head_v
    assert cache["z", 0].shape[-1] == d_head_v
    close(cache.get_full_resid_decomposition(expand_neurons=False).sum(0), cache["resid_post", -1])
    close(cache.get_full_resid_decomposition(1, mlp_input=True, expand_neurons=False).sum(0), cache["resid_mid", 1])
    moe_layers = [l for l in range(pair.bridge.cfg.n_layers) if not hasattr(pair.bridge.blocks[l].mlp, "hook_post")]
    first_moe = moe_layers[0]
    if first_moe > 0:  # dense layers before it: neurons expand
        close(cache.get_full_resid_decomposition(first_moe).sum(0), hidden[first_moe])
    with pytest.raises(BridgeError, match="no single neuron basis"):
        cache.get_neuron_results(first_moe)
