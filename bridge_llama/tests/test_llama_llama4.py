"""Llama 4 (text): the published checkpoints' switches (Scout: every layer MoE, q/k norm, Llama-3 RoPE scaling;
Maverick: MoE every other layer, no q/k norm; the kit runs them as ``conformance_configs()``), and what the kit
cannot see: the queries and keys at ``hook_rot_q/k`` (RoPE in adjacent pairs, L2 norm, temperature) written out
here, the chunked mask, and the MoE hooks (experts reading score-scaled tokens, the shared expert) against HF's
router, weight surgery and the experts' raw weights."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bridge import OptInHookError
from bridge.analysis.processing import WeightProcessingError
from bridge.testing import examples_of, make_pair
from bridge_llama import Llama4Adapter
from bridge_llama.llama4 import llama4_routing

ATOL = 1e-5


def close(got, expected, atol=ATOL):
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def test_checkpoint_style_configs_carry_the_switches():
    """The kit runs the Llama 4 examples' ``conformance_configs()`` (test_llama_conformance); they are what they say."""
    configs = examples_of(Llama4Adapter).conformance_configs()
    for config in configs.values():
        assert config.no_rope_layers == [1, 0] and config.layer_types == ["chunked_attention", "full_attention"]
        assert config.num_experts_per_tok == 1
    scout, maverick = configs["llama4-scout-style"], configs["llama4-maverick-style"]
    assert scout.moe_layers == [0, 1] and scout.use_qk_norm and scout.rope_parameters["rope_type"] == "llama3"
    assert maverick.moe_layers == [1] and not maverick.use_qk_norm and not maverick.tie_word_embeddings


@pytest.fixture
def pair(pair_for):
    return pair_for(Llama4Adapter)


def test_example_model_has_every_special_layer(pair):
    config = pair.bridge.hf_model.config
    assert config.no_rope_layers == [1, 0, 1] and config.moe_layers == [1]
    assert config.layer_types == ["chunked_attention", "full_attention", "chunked_attention"]
    assert type(pair.bridge.blocks[1].mlp).__name__ == "Llama4MoE"
    assert {type(pair.bridge.blocks[i].mlp).__name__ for i in (0, 2)} == {"MLP"}
    assert pair.bridge.cfg.d_mlp == config.intermediate_size_mlp


# --------------------------------------------------------------------------- attention


def rope_adjacent_pairs(x, positions, theta):
    """RoPE on (2i, 2i+1) pairs, written out: x ``[b, p, h, d]``, positions ``[p]``."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # [d/2]
    angles = positions[:, None].float() * freqs  # [p, d/2]
    cos, sin = angles.cos()[None, :, None], angles.sin()[None, :, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def l2_norm(x, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def test_rot_q_and_rot_k_are_the_queries_and_keys_the_scores_read(pair):
    """RoPE layers: adjacent-pair RoPE then the L2 norm of ``hook_q``/``hook_k``; the NoPE layer: ``hook_q`` times
    ``1 + attn_scale · log1p(floor((pos + 1) / floor_scale))`` and ``hook_k`` unchanged. And on every layer
    ``hook_attn_scores`` is ``rot_q · rot_k / √d_head`` plus the (chunked or causal) mask."""
    model, config = pair.bridge, pair.bridge.hf_model.config
    tokens = pair.tokens(2, 11)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: ".attn.hook_" in n)
    positions = torch.arange(11)
    theta = config.rope_parameters["rope_theta"]
    group = config.num_attention_heads // config.num_key_value_heads
    for layer, use_rope in enumerate(config.no_rope_layers):
        q, k = cache["q", layer], cache["k", layer]
        if use_rope:
            expected_q = l2_norm(rope_adjacent_pairs(q, positions, theta), config.rms_norm_eps)
            expected_k = l2_norm(rope_adjacent_pairs(k, positions, theta), config.rms_norm_eps)
        else:
            scale = 1 + config.attn_scale * torch.log1p(torch.floor((positions + 1.0) / config.floor_scale))
            expected_q, expected_k = q * scale[None, :, None, None], k
            assert scale[-1] > 1.5, "the temperature does not bite on this model"
        close(cache["rot_q", layer], expected_q)
        close(cache["rot_k", layer], expected_k)
        rot_k = cache["rot_k", layer].repeat_interleave(group, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", cache["rot_q", layer], rot_k) / math.sqrt(config.head_dim)
        allowed = cache["attn_scores", layer] > torch.finfo(torch.float32).min / 2
        close(cache["attn_scores", layer][allowed], scores[allowed])


def test_rope_layers_attend_within_chunks_and_nope_layers_to_every_earlier_position(pair):
    model, chunk = pair.bridge, pair.bridge.hf_model.config.attention_chunk_size
    _, cache = model.run_with_cache(pair.tokens(1, 11), names_filter=lambda n: n.endswith("hook_pattern"))
    q, k = torch.arange(11)[:, None], torch.arange(11)[None, :]
    causal = k <= q
    for layer, use_rope in enumerate(model.hf_model.config.no_rope_layers):
        allowed = causal & (q // chunk == k // chunk) if use_rope else causal
        pattern = cache["pattern", layer][0]  # [h, q, k]
        assert torch.all(pattern[:, ~allowed] == 0)
        assert torch.all(pattern[:, allowed] > 0)


# --------------------------------------------------------------------------- MoE


def hf_router_outputs(pair, tokens, layer=1):
    """What the reference's own router returns in ``layer``: ``(scores [N, E], logits [N, E])``."""
    seen = {}
    router = pair.reference.model.layers[layer].feed_forward.router
    handle = router.register_forward_hook(lambda _m, _a, out: seen.__setitem__("out", out))
    try:
        logits = pair.reference(tokens).logits
    finally:
        handle.remove()
    return seen["out"], logits


def test_routing_hooks_agree_with_hf_router(pair):
    model = pair.bridge
    tokens = pair.tokens(2, 9)
    (scores, router_logits), ref_logits = hf_router_outputs(pair, tokens)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1.mlp.hook_"))
    close(logits, ref_logits, atol=1e-4)
    close(cache["blocks.1.mlp.hook_router_logits"].flatten(0, 1), router_logits)
    indices = cache["blocks.1.mlp.hook_expert_indices"].flatten(0, 1)  # [N, k]
    weights = cache["blocks.1.mlp.hook_expert_weights"].flatten(0, 1)
    assert indices.shape == weights.shape == (18, 2)
    assert torch.equal(indices.sort(-1).values, (scores > 0).nonzero()[:, 1].reshape(18, 2))
    close(weights, scores.gather(1, indices))
    close(weights, torch.sigmoid(router_logits.gather(1, indices)))


def expert_by_hand(experts, e, x):
    """Expert ``e`` on ``x`` ``[..., d]`` from HF's raw weights (``gate_up_proj`` ``[E, d, 2f]``)."""
    gate, up = (x @ experts.gate_up_proj[e]).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ experts.down_proj[e]


def test_expert_outputs_are_each_expert_on_its_score_scaled_input(pair):
    """Opt-in ``hook_expert_outputs``: slot j holds expert ``indices[j]`` run on ``x · weights[j]`` (the expert
    reads the scaled token), computed from the raw weights; the slots plus the shared expert are ``hook_mlp_out``."""
    model = pair.bridge
    with pytest.raises(OptInHookError):
        model.add_hook("blocks.1.mlp.hook_expert_outputs", lambda t, hook: None)
    model.set_opt_in("hook_expert_outputs", True)
    tokens = pair.tokens()
    logits, cache = model.run_with_cache(tokens)
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    layer = model.hf_model.model.layers[1]
    x = layer.post_attention_layernorm(cache["resid_mid", 1])  # [b, p, d]
    outputs = cache["blocks.1.mlp.hook_expert_outputs"]  # [b, p, k, d]
    indices, weights = cache["blocks.1.mlp.hook_expert_indices"], cache["blocks.1.mlp.hook_expert_weights"]
    for slot in range(outputs.shape[2]):
        for e in range(4):
            chosen = indices[..., slot] == e
            scaled = x[chosen] * weights[..., slot][chosen][:, None]
            close(outputs[:, :, slot][chosen], expert_by_hand(layer.feed_forward.experts, e, scaled))
    shared = cache["blocks.1.mlp.hook_shared_expert_out"]
    close(outputs.sum(2) + shared, cache["mlp_out", 1])
    assert "blocks.0.mlp.hook_expert_outputs" not in cache  # layer 0 is dense


def test_shared_expert_hooks_are_hf_shared_expert(pair):
    """``hook_shared_expert_out`` is HF's shared expert output, before HF adds the routed sum to it in place;
    zeroing it equals zeroing the shared expert's down projection in HF."""
    model = pair.bridge
    tokens = pair.tokens()
    seen = {}
    shared = pair.reference.model.layers[1].feed_forward.shared_expert
    handle = shared.register_forward_hook(lambda _m, _a, out: seen.__setitem__("out", out.clone()))
    try:
        pair.reference(tokens)
    finally:
        handle.remove()
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: "shared_expert" in n)
    close(cache["blocks.1.mlp.hook_shared_expert_out"].flatten(0, 1), seen["out"])
    assert cache["blocks.1.mlp.shared_expert.hook_post"].shape == (*tokens.shape, 48)
    zeroed = model.run_with_hooks(
        tokens, fwd_hooks=[("blocks.1.mlp.hook_shared_expert_out", lambda t, hook: torch.zeros_like(t))]
    )
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[1].feed_forward.shared_expert.down_proj.weight.zero_()
    close(zeroed, surgery(tokens).logits, atol=1e-4)


def test_patched_selection_equals_an_hf_router_returning_it(pair):
    """Sending every token of layer 1 to expert 2 with weight 0.7 (second slot weight 0) equals an HF model whose
    router returns those scores; ``hook_mlp_out`` is then expert 2 on ``0.7 · x`` plus the shared expert."""
    model = pair.bridge
    tokens = pair.tokens()

    def indices(t, hook):
        return torch.stack([torch.full_like(t[..., 0], 2), torch.zeros_like(t[..., 0])], -1)

    def weights(t, hook):
        return torch.stack([torch.full_like(t[..., 0], 0.7), torch.zeros_like(t[..., 0])], -1)

    fwd = [("blocks.1.mlp.hook_expert_indices", indices), ("blocks.1.mlp.hook_expert_weights", weights)]
    with model.hooks(fwd_hooks=fwd):
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1."))
    layer = model.hf_model.model.layers[1]
    x = layer.post_attention_layernorm(cache["resid_mid", 1])
    expected = expert_by_hand(layer.feed_forward.experts, 2, 0.7 * x) + layer.feed_forward.shared_expert(x)
    close(cache["mlp_out", 1], expected)

    reference = copy.deepcopy(pair.reference)
    router = reference.model.layers[1].feed_forward.router

    def fixed_router(hidden):
        router_logits = F.linear(hidden, router.weight)
        scores = torch.zeros_like(router_logits)
        scores[:, 2] = 0.7
        return scores, router_logits

    router.forward = fixed_router
    close(logits, reference(tokens).logits, atol=1e-4)


def test_patching_router_logits_reroutes_with_llama4_rule(pair):
    """Masking the most used expert in the router logits: it is never selected, and the logits equal an HF model
    whose router masks it the same way."""
    model = pair.bridge
    tokens = pair.tokens(2, 10)
    _, clean = model.run_with_cache(tokens, names_filter="blocks.1.mlp.hook_expert_indices")
    e = int(torch.bincount(clean["blocks.1.mlp.hook_expert_indices"].flatten(), minlength=4).argmax())

    def mask(logits, hook):
        return logits.index_fill(-1, torch.tensor([e]), float("-inf"))

    with model.hooks(fwd_hooks=[("blocks.1.mlp.hook_router_logits", mask)]):
        logits, patched = model.run_with_cache(tokens, names_filter="blocks.1.mlp.hook_expert_indices")
    assert not (patched["blocks.1.mlp.hook_expert_indices"] == e).any()
    reference = copy.deepcopy(pair.reference)
    router = reference.model.layers[1].feed_forward.router

    def masked_router(hidden):
        router_logits = F.linear(hidden, router.weight).index_fill(-1, torch.tensor([e]), float("-inf"))
        top, top_indices = torch.topk(router_logits, router.top_k, dim=1)
        scores = torch.zeros_like(router_logits).scatter(1, top_indices, torch.sigmoid(top))
        return scores, router_logits

    router.forward = masked_router
    close(logits, reference(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)


def test_zeroing_one_experts_outputs_equals_zeroing_its_weights(pair):
    model = pair.bridge
    model.set_opt_in("hook_expert_outputs", True)
    tokens = pair.tokens()
    e, indices = 1, {}
    fwd = [
        ("blocks.1.mlp.hook_expert_indices", lambda t, hook: indices.__setitem__("i", t)),
        ("blocks.1.mlp.hook_expert_outputs", lambda t, hook: t * (indices["i"] != e)[..., None]),
    ]
    logits = model.run_with_hooks(tokens, fwd_hooks=fwd)
    assert (indices["i"] == e).any()
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[1].feed_forward.experts.down_proj[e].zero_()
    close(logits, surgery(tokens).logits, atol=1e-4)


@pytest.mark.parametrize("name", ["hook_router_logits", "hook_expert_weights", "hook_shared_expert_out"])
def test_backward_hooks_on_moe_hooks_receive_autograd_gradients(pair, name):
    model = pair.bridge
    tokens = pair.tokens(1, 8)
    hook_name = f"blocks.1.mlp.{name}"
    grads, leaf = {}, {}
    loss = model.run_with_hooks(
        tokens, bwd_hooks=[(hook_name, lambda g, hook: grads.__setitem__("g", g))], return_type="loss"
    )
    loss.backward()

    def make_leaf(t, hook):
        leaf["x"] = t.detach().requires_grad_(True)
        return leaf["x"]

    loss = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, make_leaf)], return_type="loss")
    (expected,) = torch.autograd.grad(loss, leaf["x"])
    assert expected.abs().max() > 0
    close(grads["g"], expected, atol=1e-6)


def test_weight_views_follow_llama4_expert_layout(pair):
    """Per-expert ``W_gate``/``W_in``/``W_out`` recompute each expert (from HF's own experts module, one expert
    alone), and ``x @ W_router`` is ``hook_router_logits``."""
    model = pair.bridge
    moe = model.blocks[1].mlp
    experts = model.hf_model.model.layers[1].feed_forward.experts
    assert moe.W_gate.shape == moe.W_in.shape == (4, 64, 48) and moe.W_out.shape == (4, 48, 64)
    assert not moe.b_in.any() and moe.b_out.shape == (4, 64)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    for e in range(4):
        alone = torch.zeros(4, 5, 64)
        alone[e] = x
        expected = experts(alone.flatten(0, 1)).view(4, 5, 64)[e]  # HF runs every expert; the others get zeros
        close((F.silu(x @ moe.W_gate[e]) * (x @ moe.W_in[e])) @ moe.W_out[e], expected)
    tokens = pair.tokens()
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1."))
    x = model.hf_model.model.layers[1].post_attention_layernorm(cache["resid_mid", 1])
    close(x @ moe.W_router, cache["blocks.1.mlp.hook_router_logits"])


def test_llama4_routing_rule_is_hf_router():
    """The routing function on given logits equals HF's router's scores at the chosen experts."""
    pair = make_pair(Llama4Adapter)
    router = pair.reference.model.layers[1].feed_forward.router
    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(1))
    scores, logits = router(x)
    weights, indices = llama4_routing(router, logits)
    close(scores.gather(1, indices), weights)
    assert torch.count_nonzero(scores) == indices.numel()


def test_fold_ln_says_why_the_moe_norm_cannot_be_folded(pair):
    """Llama 4's experts read the normed token multiplied by its routing score: folding refuses with a clear error
    and changes nothing; the other steps still run."""
    model = pair.bridge
    before = model.hf_model.model.layers[1].post_attention_layernorm.weight.clone()
    with pytest.raises(WeightProcessingError, match=r"cannot fold blocks\.1\.ln2.*Process without fold_ln"):
        model.process_weights()
    assert torch.equal(model.hf_model.model.layers[1].post_attention_layernorm.weight, before)
    model.process_weights(fold_ln=False)
    tokens = pair.tokens()
    close(model(tokens).log_softmax(-1), pair.reference(tokens).logits.log_softmax(-1), atol=1e-4)


def test_left_padding_takes_nope_temperature_from_positions_not_hf_index(pair):
    """HF scales NoPE-layer queries by a temperature of the token's index in the *padded* row (not its position
    id), so a left-padded sequence's outputs differ from its unpadded run, in HF itself; the bridge takes the
    temperature from the positions (as the row alone has them), and its NoPE ``hook_rot_q`` carries that."""
    config = pair.bridge.hf_model.config
    row = pair.tokens(1, 4, seed=5)
    tokens, mask = torch.zeros(1, 10, dtype=torch.long), torch.zeros(1, 10, dtype=torch.long)
    tokens[0, 6:], mask[0, 6:] = row[0], 1
    with torch.no_grad():
        hf_padded = pair.reference(tokens, attention_mask=mask).logits
        hf_alone = pair.reference(row).logits
    assert (hf_padded[0, 6:] - hf_alone[0]).abs().max() > 1e-2, "HF's padded run no longer differs"
    logits, cache = pair.bridge.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: "attn.hook_" in n)
    close(logits[0, 6:], hf_alone[0], atol=1e-4)
    index = torch.arange(4)  # the positions of the real tokens
    scale = 1 + config.attn_scale * torch.log1p(torch.floor((index + 1.0) / config.floor_scale))
    close(cache["rot_q", 1][0, 6:], cache["q", 1][0, 6:] * scale[:, None, None])
