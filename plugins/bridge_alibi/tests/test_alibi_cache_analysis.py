"""Cache analysis on the ALiBi family: BLOOM, MPT, Falcon and its variants (parallel, shared norm, grouped kv)."""

import pytest
import torch
import torch.nn.functional as F

from bridge_alibi import BloomAdapter, FalconAdapter, MptAdapter

CASES = [
    (BloomAdapter, "BloomForCausalLM"),
    (MptAdapter, "MptForCausalLM"),
    (FalconAdapter, "FalconForCausalLM"),
    (FalconAdapter, "falcon-rw"),
    (FalconAdapter, "falcon-grouped"),
    (FalconAdapter, "falcon-rotary"),
]


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@pytest.mark.parametrize(("adapter", "name"), CASES, ids=[name for _, name in CASES])
def test_full_decomposition_and_mlp_input_norm(pair_for, adapter, name):
    pair = pair_for(adapter, name)
    tokens = pair.tokens(2, 6)
    _, cache = pair.bridge.run_with_cache(tokens)
    hidden = pair.reference(tokens, output_hidden_states=True).hidden_states
    close(cache.get_full_resid_decomposition().sum(0), cache["resid_post", -1], atol=2e-5)
    close(cache.get_full_resid_decomposition(1).sum(0), hidden[1], atol=2e-5)
    stack = cache.get_full_resid_decomposition(1, mlp_input=True)
    mlp_stream = cache["resid_mid", 1] if "blocks.1.hook_resid_mid" in cache else hidden[1]
    close(stack.sum(0), mlp_stream, atol=2e-5)
    block = pair.bridge.blocks[1]
    mlp_norm = block.ln2 if hasattr(block, "ln2") else block.ln1  # one shared norm: the MLP reads ln1's output
    expected = F.layer_norm(mlp_stream, (mlp_stream.shape[-1],), eps=mlp_norm.eps)
    close(cache.apply_ln_to_stack(stack, 1, mlp_input=True).sum(0), expected, atol=2e-5)


def test_pos_slice_keeps_the_alibi_bias_whole(pair_for):
    """``hook_alibi`` ``[b, h, 1, key]`` has no query position: pos_slice leaves it as it is."""
    pair = pair_for(BloomAdapter, "BloomForCausalLM")
    tokens = pair.tokens(2, 6)
    names = lambda n: n.endswith(("hook_alibi", "hook_pattern"))  # noqa: E731
    _, full = pair.bridge.run_with_cache(tokens, names_filter=names)
    _, last = pair.bridge.run_with_cache(tokens, names_filter=names, pos_slice=-1)
    assert any(name.endswith("hook_alibi") for name in last)
    for name in last:
        expected = full[name] if name.endswith("hook_alibi") else full[name][:, :, -1]
        close(last[name], expected, atol=0)
