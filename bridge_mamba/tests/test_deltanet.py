"""Gated DeltaNet's hooks (Qwen3-Next's ``linear_attn``) are the tensors their names promise, each checked against
the HF reference's own modules and functions run on the bridge's cached inputs; patches mean what they say."""

import copy

import torch
import torch.nn.functional as F
from transformers.models.qwen3_next import modeling_qwen3_next as hf

from bridge_mamba import Qwen3NextAdapter

LAYER = 1  # the example's first Gated DeltaNet layer
P = f"blocks.{LAYER}.linear_attn"


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def _cache(pair, tokens):
    pair.bridge.set_opt_in("hook_recurrent_state", True)
    _, cache = pair.bridge.run_with_cache(tokens, names_filter=lambda n: n.startswith(P))
    return cache, pair.reference.model.layers[LAYER].linear_attn


def test_projections_gates_and_decay_are_hfs(pair_for):
    pair = pair_for(Qwen3NextAdapter)
    cache, ref = _cache(pair, pair.tokens(2, 7))
    x = cache[f"{P}.hook_in"]
    with torch.no_grad():
        q, k, v, z, b, a = ref.fix_query_key_value_ordering(ref.in_proj_qkvz(x), ref.in_proj_ba(x))
        g = -ref.A_log.float().exp() * F.softplus(a.float() + ref.dt_bias)
    for name, expected in (("q_pre_conv", q), ("k_pre_conv", k), ("v_pre_conv", v), ("gate_input", z)):
        close(cache[f"{P}.hook_{name}"], expected)
    close(cache[f"{P}.hook_beta_logit"], b)
    close(cache[f"{P}.hook_beta"], b.sigmoid())
    close(cache[f"{P}.hook_log_decay"], g)
    assert (g < 0).all()


def test_convolution_outputs_are_hfs_conv_and_silu(pair_for):
    pair = pair_for(Qwen3NextAdapter)
    cache, ref = _cache(pair, pair.tokens(2, 7))
    flat = [cache[f"{P}.hook_{n}_pre_conv"].flatten(2) for n in "qkv"]
    mixed = torch.cat(flat, dim=-1).transpose(1, 2)  # [b, conv_dim, p]
    with torch.no_grad():
        conv = F.silu(ref.conv1d(mixed)[..., : mixed.shape[-1]]).transpose(1, 2)
    q, k, v = conv.split([ref.key_dim, ref.key_dim, ref.value_dim], dim=-1)
    for name, expected in (("q", q), ("k", k), ("v", v)):
        close(cache[f"{P}.hook_{name}"].flatten(2), expected)


def test_recurrence_state_and_output_are_hfs_recurrent_rule(pair_for):
    """HF's own recurrent gated delta rule on the cached q, k, v, g, β gives ``hook_recurrence_out`` and, after each
    prefix, the state ``hook_recurrent_state`` holds; the gated norm on it is ``hook_inner_norm``."""
    pair = pair_for(Qwen3NextAdapter)
    cache, ref = _cache(pair, pair.tokens(2, 7))
    q, k, v = (cache[f"{P}.hook_{n}"] for n in "qkv")
    g, beta = cache[f"{P}.hook_log_decay"], cache[f"{P}.hook_beta"]
    out, _ = hf.torch_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, use_qk_l2norm_in_kernel=True)
    close(cache[f"{P}.hook_recurrence_out"], out, atol=1e-5)
    for t in (0, 3, 6):
        _, state = hf.torch_recurrent_gated_delta_rule(
            q[:, : t + 1],
            k[:, : t + 1],
            v[:, : t + 1],
            g=g[:, : t + 1],
            beta=beta[:, : t + 1],
            output_final_state=True,
            use_qk_l2norm_in_kernel=True,
        )
        close(cache[f"{P}.hook_recurrent_state"][:, t], state, atol=1e-5)
    o, z = cache[f"{P}.hook_recurrence_out"], cache[f"{P}.hook_gate_input"]
    with torch.no_grad():
        normed = ref.norm(o.reshape(-1, ref.head_v_dim), z.reshape(-1, ref.head_v_dim)).view_as(o)
    close(cache[f"{P}.hook_inner_norm"], normed)


def test_no_writes_equals_zeroing_the_output_projection(pair_for):
    """β = 0 writes nothing into the state, so the layer outputs zero: the same logits as HF with the layer's
    ``out_proj`` zeroed (weight surgery)."""
    pair = pair_for(Qwen3NextAdapter)
    tokens = pair.tokens(2, 7)
    got = pair.bridge.run_with_hooks(tokens, fwd_hooks=[(f"{P}.hook_beta", lambda t, hook: torch.zeros_like(t))])
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[LAYER].linear_attn.out_proj.weight.zero_()
    close(got, surgery(tokens).logits, atol=1e-5)
    assert (got - pair.reference(tokens).logits).abs().max() > 1e-3


def test_state_hook_costs_nothing_in_accuracy(pair_for):
    """With the per-step state hook on, the recurrence runs one position at a time: logits stay HF's (chunked
    rule) to ~1e-6."""
    pair = pair_for(Qwen3NextAdapter)
    tokens = pair.tokens(2, 9)
    pair.bridge.set_opt_in("hook_recurrent_state", True)
    logits, _ = pair.bridge.run_with_cache(tokens)
    close(logits, pair.reference(tokens).logits, atol=1e-5)
