"""Cache analysis on a parallel-block GPT-NeoX (no resid_mid; attention and MLP both read resid_pre)."""

import pytest
import torch
import torch.nn.functional as F

from bridge_gpt2 import GPTNeoXAdapter


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@pytest.fixture
def neox(pair_for):
    pair = pair_for(GPTNeoXAdapter, "GPTNeoXForCausalLM")
    assert pair.bridge.cfg.parallel_attn_mlp
    tokens = pair.tokens(2, 6)
    logits, cache = pair.bridge.run_with_cache(tokens)
    return pair, tokens, logits, cache, pair.reference(tokens, output_hidden_states=True)


@pytest.mark.parametrize("expand_neurons", [True, False])
@pytest.mark.parametrize("layer", [0, 1, None])
def test_full_decomposition_sums_to_hf_hidden_states(neox, layer, expand_neurons):
    pair, _, _, cache, ref = neox
    n, n_heads = pair.bridge.cfg.n_layers, pair.bridge.cfg.n_heads
    stack, labels = cache.get_full_resid_decomposition(layer, expand_neurons=expand_neurons, return_labels=True)
    index = n if layer is None else layer
    assert labels[: index * n_heads] == [f"L{l}H{h}" for l in range(index) for h in range(n_heads)]
    assert labels[-2:] == ["embed", "bias"]  # rotary: no pos_embed
    expected = cache["resid_post", -1] if layer is None else ref.hidden_states[index]
    close(stack.sum(0), expected)


def test_mlp_input_of_a_parallel_block_is_resid_pre_seen_through_ln2(neox):
    """The MLP reads ln2(resid_pre): mlp_input adds no current-layer attention and normalizes with ln2's scale."""
    pair, _, _, cache, ref = neox
    stack, labels = cache.decompose_resid(1, mlp_input=True, return_labels=True)
    assert labels == ["embed", "0_attn_out", "0_mlp_out"]
    full, full_labels = cache.get_full_resid_decomposition(1, mlp_input=True, return_labels=True)
    assert not any(label.startswith("L1H") for label in full_labels)
    close(full.sum(0), ref.hidden_states[1])
    ln2 = pair.reference.gpt_neox.layers[1].post_attention_layernorm
    expected = F.layer_norm(ref.hidden_states[1], (ref.hidden_states[1].shape[-1],), eps=ln2.eps)
    close(cache.apply_ln_to_stack(stack, 1, mlp_input=True).sum(0), expected)
    accumulated, acc_labels = cache.accumulated_resid(1, incl_mid=True, mlp_input=True, return_labels=True)
    assert acc_labels == ["0_pre", "1_pre"]
    close(accumulated[1], ref.hidden_states[1])


def test_logit_lens_gives_hf_logits(neox):
    pair, _, _, cache, ref = neox
    norm = pair.reference.gpt_neox.final_layer_norm
    lens = cache.accumulated_resid(apply_ln=True)
    close((lens[-1] * norm.weight + norm.bias) @ pair.bridge.W_U + pair.bridge.b_U, ref.logits, atol=1e-4)
