"""HunYuan dense and MoE: q/k norms *after* RoPE (hook order, placement, patches against weight surgery), NTK-alpha
RoPE, and the MoE's router, renormalized top-k (per layer when a list) and ungated shared MLP against HF's own modules.
"""

import copy
import sys

import einops
import pytest
import torch

from bridge.testing import examples_of, make_pair, save_tiny_model
from bridge_llama import HunYuanDenseV1Adapter, HunYuanMoEV1Adapter

HUNYUAN = [HunYuanDenseV1Adapter, HunYuanMoEV1Adapter]
ROUTING = ("hook_router_logits", "hook_expert_indices", "hook_expert_weights")


def close(got, expected, atol=1e-5):
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def reference_capture(pair, modules, tokens, inputs=False):
    """Run the independent HF model on ``tokens`` with torch hooks on ``{key: module}``: their outputs (or first
    inputs)."""
    seen = {}

    def keep(key):
        if inputs:
            return lambda m, args: seen.__setitem__(key, args[0])
        return lambda m, args, out: seen.__setitem__(key, out)

    register = "register_forward_pre_hook" if inputs else "register_forward_hook"
    handles = [getattr(module, register)(keep(key)) for key, module in modules.items()]
    try:
        with torch.no_grad():
            pair.reference(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("adapter", HUNYUAN, ids=lambda a: a.architectures[0])
def test_rope_then_norm_then_scores(pair_for, adapter):
    """``hook_rot_q/k`` are HF's rotary of ``hook_q/k``; ``hook_q_normed``/``hook_k_normed`` are HF's
    ``query_layernorm``/``key_layernorm`` of those (the norms' own inputs and outputs in the HF model), and the
    scores are ``q_normed · k_normed / √d`` (GQA), causally masked."""
    pair = pair_for(adapter, path="hooked")
    model = pair.bridge
    cfg = model.cfg
    b, p = 2, 9
    tokens = pair.tokens(b, p)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: ".attn.hook_" in n)
    modeling = sys.modules[type(model.hf_model).__module__]
    for layer in range(cfg.n_layers):
        attn = pair.reference.model.layers[layer].self_attn
        modules = {"q_in": attn.query_layernorm, "k_in": attn.key_layernorm}
        ins = reference_capture(pair, modules, tokens, inputs=True)
        outs = reference_capture(pair, {"q_out": attn.query_layernorm, "k_out": attn.key_layernorm}, tokens)
        q, k = cache["q", layer], cache["k", layer]
        cos, sin = pair.reference.model.rotary_emb(q, torch.arange(p).expand(b, p))
        rot_q, rot_k = modeling.apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        close(cache["rot_q", layer], rot_q.transpose(1, 2))
        close(cache["rot_k", layer], rot_k.transpose(1, 2))
        close(cache["rot_q", layer], ins["q_in"].transpose(1, 2))
        close(cache["rot_k", layer], ins["k_in"].transpose(1, 2))
        q_normed, k_normed = cache[f"blocks.{layer}.attn.hook_q_normed"], cache[f"blocks.{layer}.attn.hook_k_normed"]
        close(q_normed, outs["q_out"].transpose(1, 2))
        close(k_normed, outs["k_out"].transpose(1, 2))
        close(q_normed, attn.query_layernorm(cache["rot_q", layer]))
        assert not torch.allclose(q_normed, cache["rot_q", layer], atol=1e-3)
        keys = einops.repeat(k_normed, "b p kv d -> b p (kv g) d", g=cfg.n_heads // cfg.n_key_value_heads)
        scores = torch.einsum("bqhd,bkhd->bhqk", q_normed, keys) * cfg.d_head**-0.5
        causal = torch.ones(p, p, dtype=torch.bool).tril()
        close(cache["attn_scores", layer], scores.masked_fill(~causal, torch.finfo(scores.dtype).min))


@pytest.mark.parametrize("adapter", HUNYUAN, ids=lambda a: a.architectures[0])
def test_patch_at_hook_q_normed_equals_scaling_the_norm_weight(pair_for, adapter):
    """Doubling ``hook_q_normed`` equals doubling ``query_layernorm``'s weight in the HF model."""
    pair = pair_for(adapter)
    tokens = pair.tokens()
    logits = pair.bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_q_normed", lambda q, hook: q * 2.0)])
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[0].self_attn.query_layernorm.weight.mul_(2.0)
    close(logits, surgery(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)


@pytest.mark.parametrize("adapter", HUNYUAN, ids=lambda a: a.architectures[0])
def test_zeroing_a_key_head_at_hook_rot_k_equals_zeroing_its_projection(pair_for, adapter):
    """A zero key head at ``hook_rot_k`` reaches the key norm (which keeps it zero) and the scores: the logits are
    the HF model's with that head's ``k_proj`` rows zeroed."""
    pair = pair_for(adapter)
    model = pair.bridge
    tokens = pair.tokens()

    def zero_head(k, hook):
        k = k.clone()
        k[:, :, 1] = 0.0
        return k

    logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_rot_k", zero_head)])
    surgery = copy.deepcopy(pair.reference)
    d = model.cfg.d_head
    with torch.no_grad():
        surgery.model.layers[1].self_attn.k_proj.weight[d : 2 * d] = 0.0
    close(logits, surgery(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)


def test_rot_hooks_do_not_switch_the_seam_on(pair_for):
    """``hook_rot_q/k`` sit on the norms, so caching them keeps the user's attention implementation (SDPA)."""
    model = pair_for(HunYuanDenseV1Adapter).bridge
    attn = model.blocks[0].attn
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_rot_q", lambda t, hook: None)]):
        assert attn.hook_rot_q.active and not attn.seam_active
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", lambda t, hook: None)]):
        assert attn.seam_active


def test_ntk_alpha_rope_stretches_the_base(tmp_path):
    """Hunyuan-7B's RoPE (``"dynamic"`` with a fixed ``alpha``) rotates by the base ``θ·α^(d/(d-2))``, here
    checked on ``hook_rot_q`` against RoPE by hand, and the logits still equal HF's."""
    config = examples_of(HunYuanDenseV1Adapter).conformance_configs()["hunyuan-7b-style"]
    pair = make_pair(HunYuanDenseV1Adapter, directory=save_tiny_model(config, tmp_path))
    model = pair.bridge
    tokens = pair.tokens(1, 9)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0.attn.hook_"))
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    rope, d = config.rope_parameters, model.cfg.d_head
    base = rope["rope_theta"] * rope["alpha"] ** (d / (d - 2))
    angles = torch.arange(9.0)[:, None] * base ** (-torch.arange(0, d, 2) / d)
    cos, sin = angles.cos()[None, :, None], angles.sin()[None, :, None]
    first, second = cache["q", 0].chunk(2, dim=-1)
    close(cache["rot_q", 0], torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1))


# --------------------------------------------------------------------------- the MoE


def test_moe_routing_hooks_are_hf_gate_outputs(pair_for):
    """``hook_router_logits`` is ``gate.wg``'s float32 output; ``hook_expert_indices``/``hook_expert_weights`` are the
    gate's own top-k and renormalized softmax weights; ``mlp.hook_shared_expert_out`` is ``shared_mlp``'s output and
    ``hook_mlp_out`` is the experts' sum plus it."""
    pair = pair_for(HunYuanMoEV1Adapter)
    model = pair.bridge
    b, p = 2, 9
    tokens = pair.tokens(b, p)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: ".mlp." in n or "mlp_out" in n)
    for layer in range(model.cfg.n_layers):
        moe = pair.reference.model.layers[layer].mlp
        seen = reference_capture(pair, {"gate": moe.gate, "shared": moe.shared_mlp, "experts": moe.experts}, tokens)
        logits, weights, indices = seen["gate"]
        mlp = f"blocks.{layer}.mlp."
        close(cache[mlp + "hook_router_logits"], logits.view(b, p, -1))
        assert torch.equal(cache[mlp + "hook_expert_indices"], indices.view(b, p, -1))
        close(cache[mlp + "hook_expert_weights"], weights.view(b, p, -1))
        close(cache[mlp + "hook_expert_weights"].sum(-1), torch.ones(b, p))  # renormalized
        close(cache[mlp + "hook_shared_expert_out"], seen["shared"])
        close(cache["mlp_out", layer], seen["experts"].view(b, p, -1) + cache[mlp + "hook_shared_expert_out"])


def test_moe_masked_router_logits_equal_hf_with_the_same_mask(pair_for):
    """Masking expert e in layer 0's ``hook_router_logits`` re-routes as HF's gate does on masked logits (its own
    softmax, top-k and renormalization run on them)."""
    pair = pair_for(HunYuanMoEV1Adapter)
    model = pair.bridge
    tokens = pair.tokens(2, 10)
    _, clean = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_expert_indices")
    e = int(torch.bincount(clean["blocks.0.mlp.hook_expert_indices"].flatten()).argmax())

    def mask(logits):
        return logits.index_fill(-1, torch.tensor([e]), float("-inf"))

    with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_router_logits", lambda t, hook: mask(t))]):
        logits, patched = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_expert_indices")
    assert not (patched["blocks.0.mlp.hook_expert_indices"] == e).any()
    reference = copy.deepcopy(pair.reference)
    wg = reference.model.layers[0].mlp.gate.wg
    wg.register_forward_hook(lambda m, args, out: mask(out))
    close(logits, reference(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)


def test_moe_top_k_per_layer(tmp_path):
    """``moe_topk`` given per layer (``[1, 3]``): each layer's selection hooks have its own k, and the logits are
    HF's."""
    config = examples_of(HunYuanMoEV1Adapter).conformance_configs()["hunyuan-moe-topk-per-layer"]
    pair = make_pair(HunYuanMoEV1Adapter, directory=save_tiny_model(config, tmp_path))
    model = pair.bridge
    tokens = pair.tokens(2, 6)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(ROUTING))
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    assert model.cfg.extra["experts_per_token"] == [1, 3]
    assert cache["blocks.0.mlp.hook_expert_indices"].shape == (2, 6, 1)
    assert cache["blocks.1.mlp.hook_expert_weights"].shape == (2, 6, 3)
    close(cache["blocks.0.mlp.hook_expert_weights"], torch.ones(2, 6, 1))  # one expert, renormalized: weight 1
