"""What is special to the fused-QKV family, checked against HF's own code."""

import einops
import pytest
import torch
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

from bridge_gpt2 import GPT2Adapter, GPTBigCodeAdapter, GPTNeoXAdapter


def test_neox_rot_q_is_hf_rotary_of_hook_q(pair_for):
    pair = pair_for(GPTNeoXAdapter, "GPTNeoXForCausalLM")
    model = pair.bridge
    tokens = pair.tokens(2, 9)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1.attn.hook_"))
    positions = torch.arange(9).expand(2, 9)
    cos, sin = model.hf_model.gpt_neox.rotary_emb(cache["q", 1], positions)
    q = cache["q", 1].transpose(1, 2)  # [b, h, p, d]
    k = cache["k", 1].transpose(1, 2)
    rot_q, rot_k = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(cache["rot_q", 1], rot_q.transpose(1, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(cache["rot_k", 1], rot_k.transpose(1, 2), atol=1e-6, rtol=0)
    rotary_dim = model.cfg.rotary_dim
    assert 0 < rotary_dim < model.cfg.d_head
    torch.testing.assert_close(cache["rot_q", 1][..., rotary_dim:], cache["q", 1][..., rotary_dim:])


def test_neox_patch_at_hook_q_flows_through_rotary(pair_for):
    """A patch at the pre-rotary ``hook_q`` shows up, rotated, at ``hook_rot_q``."""
    pair = pair_for(GPTNeoXAdapter, "GPTNeoXForCausalLM")
    model = pair.bridge
    tokens = pair.tokens(1, 6)
    _, clean = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0.attn."))
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_q", lambda q, hook: q * 2.0)]):
        _, patched = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0.attn."))
    torch.testing.assert_close(patched["rot_q", 0], clean["rot_q", 0] * 2.0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patched["rot_k", 0], clean["rot_k", 0])
    assert not torch.allclose(patched["pattern", 0], clean["pattern", 0])


@pytest.mark.parametrize(
    ("adapter", "arch"),
    [
        (GPT2Adapter, "GPT2LMHeadModel"),
        (GPTNeoXAdapter, "GPTNeoXForCausalLM"),
        (GPTBigCodeAdapter, "GPTBigCodeForCausalLM"),
    ],
)
def test_hook_result_sums_to_attention_output(pair_for, adapter, arch):
    pair = pair_for(adapter, arch)
    model = pair.bridge
    tokens = pair.tokens()
    expected = model(tokens)
    model.set_use_attn_result(True)
    logits, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
    result = cache["result", 0]  # [b, p, h, d_model]
    assert result.shape == (*tokens.shape, model.cfg.n_heads, model.cfg.d_model)
    bias = model.blocks[0].attn.out_proj.bias
    torch.testing.assert_close(result.sum(2) + bias, cache["attn_out", 0], atol=1e-5, rtol=0)
    # Zeroing one head's result is zeroing its output weights (checked at hook_z by the kit).
    ablated = model.run_with_hooks(
        tokens,
        fwd_hooks=[("blocks.0.attn.hook_result", lambda r, hook: r.index_fill(2, torch.tensor([1]), 0.0))],
    )
    z_ablated = model.run_with_hooks(
        tokens, fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: z.index_fill(2, torch.tensor([1]), 0.0))]
    )
    torch.testing.assert_close(ablated, z_ablated, atol=1e-4, rtol=0)


def test_hook_result_is_opt_in(pair_for):
    from bridge import OptInHookError

    model = pair_for(GPT2Adapter, "GPT2LMHeadModel").bridge
    with pytest.raises(OptInHookError, match="set_use_attn_result"):
        model.add_hook("blocks.0.attn.hook_result", lambda r, hook: None)
    _, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]))
    assert not any(name.endswith("hook_result") for name in cache)


def test_bigcode_multi_query_value_patch_reaches_every_head(pair_for):
    """One kv head: patching it changes the output of every query head, as weight surgery on
    the value slice of ``c_attn`` does."""
    pair = pair_for(GPTBigCodeAdapter, "GPTBigCodeForCausalLM")
    model = pair.bridge
    assert model.cfg.n_key_value_heads == 1
    tokens = pair.tokens()
    _, clean = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_v", lambda v, hook: torch.zeros_like(v))]):
        logits, patched = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
    assert torch.all(patched["z", 0].abs() < 1e-6)
    assert clean["z", 0].abs().amax(dim=(0, 1, 3)).min() > 0
    surgery = pair.reference
    c_attn = surgery.transformer.h[0].attn.c_attn
    d = model.cfg.d_model
    with torch.no_grad():
        c_attn.weight[d + model.cfg.d_head :] = 0.0
        c_attn.bias[d + model.cfg.d_head :] = 0.0
    torch.testing.assert_close(logits, surgery(tokens).logits, atol=1e-4, rtol=0)


def test_gpt2_fused_split_matches_c_attn(pair_for):
    pair = pair_for(GPT2Adapter, "GPT2LMHeadModel")
    model = pair.bridge
    tokens = pair.tokens()
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0."))
    ref_block = pair.reference.transformer.h[0]  # the independent HF model: its own ln_1 output
    seen = {}
    handle = ref_block.ln_1.register_forward_hook(lambda _m, _args, out: seen.__setitem__("ln1", out))
    with torch.no_grad():
        pair.reference(tokens)
        fused = ref_block.attn.c_attn(seen["ln1"])
    handle.remove()
    q, k, v = einops.rearrange(fused, "b p (three h d) -> three b p h d", three=3, h=model.cfg.n_heads)
    for name, expected in (("q", q), ("k", k), ("v", v)):
        torch.testing.assert_close(cache[name, 0], expected, atol=1e-5, rtol=0)
