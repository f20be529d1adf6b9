"""Cache analysis on the RoPE family: RMS norms (no centering), sandwich norms, blocks without pre-norms, MoE."""

import pytest
import torch
from torch import nn

import bridge
from bridge import BridgeError
from bridge_llama import Gemma2Adapter, LlamaAdapter, MixtralAdapter, Olmo2Adapter


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def run(pair, batch=2, pos=6):
    tokens = pair.tokens(batch, pos)
    logits, cache = pair.bridge.run_with_cache(tokens)
    return tokens, logits, cache, pair.reference(tokens, output_hidden_states=True)


def rms_normalized(x, eps):
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


@pytest.fixture
def llama(pair_for):
    pair = pair_for(LlamaAdapter)
    return pair, *run(pair)


@pytest.mark.parametrize(("layer", "mlp_input"), [(None, False), (0, False), (1, False), (1, True)])
def test_llama_full_decomposition_sums_to_the_stream(llama, layer, mlp_input):
    _, _, _, cache, ref = llama
    stack, labels = cache.get_full_resid_decomposition(layer, mlp_input=mlp_input, return_labels=True)
    assert "pos_embed" not in labels and labels[-2:] == ["embed", "bias"]
    if layer is None:
        expected = cache["resid_post", -1]
    else:
        expected = cache["resid_mid", layer] if mlp_input else ref.hidden_states[layer]
    close(stack.sum(0), expected)


def test_llama_rms_apply_ln_does_not_center(llama):
    pair, _, _, cache, _ = llama
    stack = cache.decompose_resid(1, mlp_input=True)
    eps = pair.reference.model.layers[1].post_attention_layernorm.variance_epsilon
    close(cache.apply_ln_to_stack(stack, 1, mlp_input=True).sum(0), rms_normalized(cache["resid_mid", 1], eps))
    one = cache.apply_ln_to_stack(stack[:1], 1, mlp_input=True)
    close(one[0], stack[0] / cache["blocks.1.ln2.hook_scale"])


def test_llama_logit_lens_gives_hf_logits(llama):
    pair, _, _, cache, ref = llama
    lens = cache.accumulated_resid(apply_ln=True)
    close((lens[-1] * pair.reference.model.norm.weight) @ pair.bridge.W_U, ref.logits, atol=1e-4)


def test_llama_logit_attrs_sum_to_the_logit_difference_with_a_folded_norm(llama):
    pair, tokens, logits, _, _ = llama
    hf = type(pair.reference).from_pretrained(pair.reference.name_or_path).eval()
    W = hf.lm_head.weight.detach()  # [vocab, d]
    head = nn.Linear(W.shape[1], W.shape[0], bias=False)
    with torch.no_grad():
        head.weight.copy_(W * hf.model.norm.weight)
        hf.model.norm.weight.fill_(1.0)
    hf.lm_head = head
    folded = bridge.wrap(hf, pair.bridge.tokenizer)
    folded_logits, cache = folded.run_with_cache(tokens)
    close(folded_logits, logits, atol=1e-4)
    attrs = cache.logit_attrs(cache.get_full_resid_decomposition(), 3, incorrect_tokens=8)
    close(attrs.sum(0), logits[..., 3] - logits[..., 8], atol=1e-4)


def test_sandwich_norm_blocks_refuse_head_and_neuron_results_but_decompose_per_layer(pair_for):
    pair = pair_for(Gemma2Adapter)
    _, _, cache, ref = run(pair)
    for call in (cache.stack_head_results, cache.get_full_resid_decomposition):
        with pytest.raises(BridgeError, match=r"ln1_post.*do not add up to hook_attn_out.*decompose_resid"):
            call()
    with pytest.raises(BridgeError, match=r"ln2_post.*do not add up to hook_mlp_out"):
        cache.get_neuron_results(0)
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels == ["embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    close(stack.sum(0), cache["resid_post", -1])
    close(cache.decompose_resid(1).sum(0), ref.hidden_states[1])
    cache.compute_head_results()  # z @ W_O per head: the (pre-post-norm) o_proj output, as hook_result is
    o_proj = pair.reference.model.layers[0].self_attn.o_proj
    close(cache["result", 0].sum(-2), o_proj(cache["z", 0].flatten(-2)))


def test_blocks_without_a_pre_norm_leave_the_stack_unnormalized(pair_for):
    """OLMo-2's attention and MLP read the stream as it is: apply_ln at a block is the identity."""
    pair = pair_for(Olmo2Adapter)
    _, _, cache, _ = run(pair)
    stack = cache.decompose_resid(1)
    close(cache.apply_ln_to_stack(stack, 1), stack, atol=0)
    close(cache.apply_ln_to_stack(stack, 1, mlp_input=True), stack, atol=0)
    final = cache.decompose_resid()
    eps = pair.reference.model.norm.variance_epsilon
    close(cache.apply_ln_to_stack(final).sum(0), rms_normalized(cache["resid_post", -1], eps))


def test_moe_mlps_have_no_neurons_but_decompose_per_layer(pair_for):
    pair = pair_for(MixtralAdapter)
    _, _, cache, ref = run(pair)
    with pytest.raises(BridgeError, match=r"mixture of experts.*decompose_resid"):
        cache.stack_neuron_results(2)
    with pytest.raises(BridgeError, match="no single neuron basis"):
        cache.get_full_resid_decomposition()
    stack, labels = cache.get_full_resid_decomposition(expand_neurons=False, return_labels=True)
    assert labels[-4:] == ["0_mlp_out", "1_mlp_out", "embed", "bias"]
    close(stack.sum(0), cache["resid_post", -1])
    close(cache.get_full_resid_decomposition(1, expand_neurons=False).sum(0), ref.hidden_states[1])
