"""What is special to MLA and DeepSeek's MoE, checked against weight surgery and HF's own code."""

import copy
import sys

import pytest
import torch

from bridge import BridgeError

ARCHS = ["DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "deepseek-v2-variant", "deepseek-v3-variant"]
PATHS = ["native", "hooked"]


def hf_attn(model, layer=0):
    return model.blocks[layer].attn.hf


def module_path(model, module):
    return next(name for name, m in model.hf_model.named_modules() if m is module)


def surgery_copy(pair, module, edit):
    """A copy of the HF reference with ``edit(module_copy)`` applied to the copy of ``module``."""
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        edit(surgery.get_submodule(module_path(pair.bridge, module)))
    return surgery


def latent_of(model_copy, module_path_name, tokens):
    """What a module of an HF model outputs (its first call) on ``tokens``."""
    seen = {}
    handle = model_copy.get_submodule(module_path_name).register_forward_hook(
        lambda _m, _a, out: seen.setdefault("out", out.detach())
    )
    try:
        model_copy(tokens)
    finally:
        handle.remove()
    return seen["out"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ARCHS)
def test_kv_latent_patch_is_weight_surgery_on_kv_a_proj_and_reaches_every_head(pair_for, name, path):
    """Patching ``hook_kv_latent`` with the latent a modified ``kv_a_proj_with_mqa`` would give equals that
    weight surgery, and changes the key (nope part) and value of every head; zeroing it equals zeroing the
    projection's latent rows."""
    pair = pair_for(name, path)
    model, attn = pair.bridge, hf_attn(pair.bridge)
    rank = attn.kv_lora_rank
    tokens = pair.tokens()
    generator = torch.Generator().manual_seed(5)

    def perturb(proj):
        proj.weight[:rank] += 0.5 * torch.randn(proj.weight[:rank].shape, generator=generator)

    surgery = surgery_copy(pair, attn.kv_a_proj_with_mqa, perturb)
    new_latent = latent_of(surgery, module_path(model, attn.kv_a_layernorm), tokens)
    names = lambda n: n.startswith("blocks.0.attn.hook_") and n.endswith(("_k", "_v", "kv_latent"))  # noqa: E731
    with pair.on_path():
        _, clean = model.run_with_cache(tokens, names_filter=names)
        with model.hooks(fwd_hooks=[("blocks.0.attn.hook_kv_latent", lambda t, hook: new_latent)]):
            logits, patched = model.run_with_cache(tokens, names_filter=names)
    assert clean["blocks.0.attn.hook_kv_latent"].shape == (*tokens.shape, rank)
    torch.testing.assert_close(logits, surgery(tokens).logits, atol=1e-4, rtol=0)
    nope = attn.qk_nope_head_dim
    k_change = (patched["blocks.0.attn.hook_k"] - clean["blocks.0.attn.hook_k"]).abs()
    v_change = (patched["blocks.0.attn.hook_v"] - clean["blocks.0.attn.hook_v"]).abs()
    assert (k_change[..., :nope].amax(dim=(0, 1, 3)) > 1e-3).all(), "some head's key did not change"
    assert (v_change.amax(dim=(0, 1, 3)) > 1e-3).all(), "some head's value did not change"
    assert k_change[..., nope:].max() == 0, "the rope key does not come from the latent"

    def zero_rows(proj):
        proj.weight[:rank] = 0.0
        if proj.bias is not None:
            proj.bias[:rank] = 0.0

    zeroed = surgery_copy(pair, attn.kv_a_proj_with_mqa, zero_rows)
    with pair.on_path():
        got = model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.0.attn.hook_kv_latent", lambda t, hook: torch.zeros_like(t))]
        )
    torch.testing.assert_close(got, zeroed(tokens).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["DeepseekV3ForCausalLM", "deepseek-v2-variant"])
def test_q_latent_patch_is_weight_surgery_on_q_a_proj(pair_for, name):
    pair = pair_for(name, "hooked")
    model, attn = pair.bridge, hf_attn(pair.bridge)
    tokens = pair.tokens()
    generator = torch.Generator().manual_seed(6)
    surgery = surgery_copy(
        pair, attn.q_a_proj, lambda proj: proj.weight.add_(0.5 * torch.randn(proj.weight.shape, generator=generator))
    )
    new_latent = latent_of(surgery, module_path(model, attn.q_a_layernorm), tokens)
    assert new_latent.shape == (*tokens.shape, attn.q_lora_rank)
    with pair.on_path():
        got = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_q_latent", lambda t, hook: new_latent)])
    torch.testing.assert_close(got, surgery(tokens).logits, atol=1e-4, rtol=0)


def test_v2_without_q_lora_has_no_q_latent(pair_for):
    model = pair_for("DeepseekV2ForCausalLM").bridge
    assert "blocks.0.attn.hook_q_latent" not in model.hook_dict
    assert "blocks.0.attn.hook_kv_latent" in model.hook_dict


def hf_attention_inputs(hf_model, tokens, layer, monkeypatch):
    """The query and key states HF's own eager forward hands its attention function in ``layer``, after
    RoPE (``[b, h, p, d]``), recorded by wrapping the modeling module's ``eager_attention_forward``."""
    modeling = sys.modules[type(hf_model).__module__]
    eager, seen = modeling.eager_attention_forward, []

    def recording(module, query, key, *args, **kwargs):
        seen.append((query.detach(), key.detach()))
        return eager(module, query, key, *args, **kwargs)

    assert hf_model.config._attn_implementation == "eager"
    with monkeypatch.context() as patch, torch.no_grad():
        patch.setattr(modeling, "eager_attention_forward", recording)
        hf_model(tokens)
    return seen[layer]


@pytest.mark.parametrize("name", ARCHS)
def test_key_hooks_decompose_as_mla_says(pair_for, name, monkeypatch):
    """``hook_k`` = per head ``[kv_b_proj(kv_latent) nope part | hook_k_rope]``; ``hook_v`` is the value
    part of ``kv_b_proj``; ``hook_rot_q``/``hook_rot_k`` are the query and key states HF's own forward
    gives its attention function (nope part unrotated, rope part after HF's rotary)."""
    pair = pair_for(name)
    model, attn = pair.bridge, hf_attn(pair.bridge, 1)
    tokens = pair.tokens(2, 7)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1.attn."))
    h, nope, rope, dv = attn.num_heads, attn.qk_nope_head_dim, attn.qk_rope_head_dim, attn.v_head_dim
    kv = attn.kv_b_proj(cache["blocks.1.attn.hook_kv_latent"]).unflatten(-1, (h, nope + dv))  # [b, p, h, nope+v]
    k, q = cache["blocks.1.attn.hook_k"], cache["blocks.1.attn.hook_q"]
    assert k.shape == q.shape == (2, 7, h, nope + rope)
    torch.testing.assert_close(k[..., :nope], kv[..., :nope], atol=1e-6, rtol=0)
    torch.testing.assert_close(cache["blocks.1.attn.hook_v"], kv[..., nope:], atol=1e-6, rtol=0)
    torch.testing.assert_close(k[..., nope:], cache["blocks.1.attn.hook_k_rope"][:, :, None].expand(-1, -1, h, -1))
    hf_query, hf_key = hf_attention_inputs(pair.reference, tokens, 1, monkeypatch)  # [b, h, p, nope + rope]
    torch.testing.assert_close(cache["blocks.1.attn.hook_rot_q"], hf_query.transpose(1, 2), atol=4e-6, rtol=0)
    torch.testing.assert_close(cache["blocks.1.attn.hook_rot_k"], hf_key.transpose(1, 2), atol=4e-6, rtol=0)
    assert not torch.allclose(cache["blocks.1.attn.hook_rot_k"], k)  # the rope part did rotate


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["DeepseekV2ForCausalLM", "deepseek-v3-variant"])
def test_hook_k_patches_equal_weight_surgery(pair_for, name, path):
    """Zeroing head 2's nope key at ``hook_k`` = zeroing its rows of ``kv_b_proj``; zeroing every head's
    rope key = zeroing the rope rows of ``kv_a_proj_with_mqa``; zeroing head 2's rope key alone (no
    weight can do that: it is shared) = zeroing it after rotary at ``hook_rot_k``."""
    pair = pair_for(name, path)
    model, attn = pair.bridge, hf_attn(pair.bridge)
    nope, dv, rank, head = attn.qk_nope_head_dim, attn.v_head_dim, attn.kv_lora_rank, 2
    tokens = pair.tokens()

    def patched(name_, edit):
        def fn(t, hook):
            t = t.clone()
            edit(t)
            return t

        with pair.on_path():
            return model.run_with_hooks(tokens, fwd_hooks=[(name_, fn)])

    def zero_k_rows(proj):
        proj.weight[head * (nope + dv) : head * (nope + dv) + nope] = 0.0

    got = patched("blocks.0.attn.hook_k", lambda k: k[:, :, head, :nope].zero_())
    torch.testing.assert_close(got, surgery_copy(pair, attn.kv_b_proj, zero_k_rows)(tokens).logits, atol=1e-4, rtol=0)

    def zero_rope_rows(proj):
        proj.weight[rank:] = 0.0
        if proj.bias is not None:
            proj.bias[rank:] = 0.0

    got = patched("blocks.0.attn.hook_k", lambda k: k[..., nope:].zero_())
    expected = surgery_copy(pair, attn.kv_a_proj_with_mqa, zero_rope_rows)(tokens).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(patched("blocks.0.attn.hook_k_rope", lambda r: r.zero_()), expected, atol=1e-4, rtol=0)
    one_head = patched("blocks.0.attn.hook_k", lambda k: k[:, :, head, nope:].zero_())
    torch.testing.assert_close(
        one_head, patched("blocks.0.attn.hook_rot_k", lambda k: k[:, :, head, nope:].zero_()), atol=1e-5, rtol=0
    )
    assert (one_head - pair.reference(tokens).logits).abs().max() > 1e-6


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["deepseek-v2-variant", "deepseek-v3-variant"])
def test_mla_head_sizes_and_result_ablation(pair_for, name, path):
    """Where ``v_head_dim`` differs from ``qk_nope + qk_rope`` (the kit checks hook shapes and ``hook_z``
    ablation from ``cfg.d_head``/``cfg.d_head_v``): the config says so, the shared rope key has its own
    size, and zeroing head 1 at ``hook_result`` equals zeroing its ``o_proj`` columns."""
    pair = pair_for(name, path)
    model, attn = pair.bridge, hf_attn(pair.bridge)
    cfg, dv = model.cfg, attn.v_head_dim
    assert dv != cfg.d_head == attn.qk_head_dim and cfg.d_head_v == dv
    tokens = pair.tokens()
    with pair.on_path():
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_k_rope")
        model.set_use_attn_result(True)
        got = model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.0.attn.hook_result", lambda t, hook: t.index_fill(2, torch.tensor([1]), 0.0))]
        )
        model.set_use_attn_result(False)
    assert cache["blocks.0.attn.hook_k_rope"].shape == (*tokens.shape, attn.qk_rope_head_dim)
    expected = surgery_copy(pair, attn.o_proj, lambda o: o.weight[:, dv : 2 * dv].zero_())(tokens).logits
    assert (expected - pair.reference(tokens).logits).abs().max() > 1e-6
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ARCHS)
def test_generation_with_the_latent_cache(pair_for, name):
    """HF's generate with a KV cache and every MLA hook but ``hook_k`` hooked gives HF's tokens; decode
    steps see one new position at the latents and every position at ``hook_v`` (re-expanded from the
    cached latents); ``hook_k`` refuses a cache with a clear error."""
    pair = pair_for(name)
    model = pair.bridge
    prompt = pair.tokens(1, 5)
    kwargs = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0, use_cache=True)
    expected = pair.reference.generate(prompt, **kwargs)
    seen = []
    hooked = lambda n: ".attn.hook_" in n and not n.endswith("hook_k")  # noqa: E731
    with model.hooks(fwd_hooks=[(hooked, lambda t, hook: seen.append((hook.name, t.shape)))]):
        got = model.hf_model.generate(prompt, **kwargs)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert [s[1] for n, s in seen if n == "blocks.0.attn.hook_kv_latent"] == [5, 1, 1]
    assert [s[-1] for n, s in seen if n == "blocks.0.attn.hook_pattern"] == [5, 6, 7]
    assert [s[1] for n, s in seen if n == "blocks.0.attn.hook_v"] == [5, 6, 7], "v is re-expanded from the latents"
    with (
        model.hooks(fwd_hooks=[("blocks.0.attn.hook_k", lambda t, hook: None)]),
        pytest.raises(BridgeError, match="KV cache"),
    ):
        model.hf_model.generate(prompt, **kwargs)


# ------------------------------------------------------------------------------------------------ MoE


def moe_layer(name):
    return 0 if name == "DeepseekV2ForCausalLM" else 1  # V3 and the V2 variant have a dense layer 0


@pytest.mark.parametrize("name", ARCHS)
def test_routing_functions_reproduce_hf_routers(pair_for, name):
    """Our routing rule applied to the HF router's own logits gives its weights and experts exactly."""
    model = pair_for(name).bridge
    mlp = model.blocks[moe_layer(name)].mlp
    router = mlp.router
    generator = torch.Generator().manual_seed(7)
    hidden = torch.randn(64, model.cfg.d_model, generator=generator)
    logits, weights, indices = router(hidden)
    ours_w, ours_i = mlp.routing(router, logits)
    torch.testing.assert_close(ours_i, indices, atol=0, rtol=0)
    torch.testing.assert_close(ours_w, weights, atol=0, rtol=0)
    if name == "deepseek-v3-variant":
        assert router.e_score_correction_bias.abs().max() > 0
        modeling = sys.modules[type(router).__module__]
        assert modeling.DeepseekV3TopkRouter is type(router)


@pytest.mark.parametrize("name", ["DeepseekV3ForCausalLM", "deepseek-v2-variant"])
def test_first_k_dense_replace_layers_are_dense(pair_for, name):
    model = pair_for(name).bridge
    assert "blocks.0.mlp.hook_pre" in model.hook_dict and "blocks.0.mlp.hook_router_logits" not in model.hook_dict
    assert "blocks.1.mlp.hook_router_logits" in model.hook_dict and "blocks.1.mlp.hook_pre" not in model.hook_dict


@pytest.mark.parametrize("name", ARCHS)
def test_moe_output_is_routed_experts_plus_shared_experts(pair_for, name):
    pair = pair_for(name)
    model, layer = pair.bridge, moe_layer(name)
    tokens = pair.tokens()
    model.set_opt_in("hook_expert_outputs", True)
    try:
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith(f"blocks.{layer}."))
    finally:
        model.set_opt_in("hook_expert_outputs", False)
    torch.testing.assert_close(logits, pair.reference(tokens).logits, atol=1e-4, rtol=0)
    prefix = f"blocks.{layer}.mlp."
    k = model.cfg.extra["experts_per_token"]
    assert cache[prefix + "hook_router_logits"].shape == (*tokens.shape, model.cfg.extra["n_experts"])
    assert cache[prefix + "hook_expert_indices"].shape == (*tokens.shape, k)
    shared = cache[prefix + "shared_experts.hook_out"]
    hf_shared = model.blocks[layer].mlp.shared_experts.hf
    ln2_out = model.blocks[layer].ln2.hf(cache[f"blocks.{layer}.hook_resid_mid"])
    torch.testing.assert_close(shared, hf_shared(ln2_out), atol=1e-6, rtol=0)
    expected = cache[prefix + "hook_expert_outputs"].sum(dim=2) + shared
    torch.testing.assert_close(cache[f"blocks.{layer}.hook_mlp_out"], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["DeepseekV2ForCausalLM", "deepseek-v3-variant"])
def test_shared_expert_ablation_equals_weight_surgery(pair_for, name):
    pair = pair_for(name)
    model, layer = pair.bridge, moe_layer(name)
    tokens = pair.tokens()
    got = model.run_with_hooks(
        tokens, fwd_hooks=[(f"blocks.{layer}.mlp.shared_experts.hook_out", lambda t, hook: torch.zeros_like(t))]
    )
    down = model.blocks[layer].mlp.shared_experts.hf.down_proj
    expected = surgery_copy(pair, down, lambda proj: proj.weight.zero_())(tokens).logits
    assert (expected - pair.reference(tokens).logits).abs().max() > 1e-6
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ARCHS)
def test_router_logit_patch_reroutes_through_the_deepseek_rule(pair_for, name):
    """Boosting one expert's router logit makes every token select it; the identity patch changes nothing."""
    pair = pair_for(name)
    model, layer = pair.bridge, moe_layer(name)
    tokens = pair.tokens()
    hook = f"blocks.{layer}.mlp.hook_router_logits"
    indices = f"blocks.{layer}.mlp.hook_expert_indices"
    with model.hooks(fwd_hooks=[(hook, lambda t, hook: t.clone())]):
        logits, cache = model.run_with_cache(tokens, names_filter=indices)
    torch.testing.assert_close(logits, pair.reference(tokens).logits, atol=1e-4, rtol=0)

    def boost(t, hook):
        t = t.clone()
        t[..., 5] += 50.0
        return t

    with model.hooks(fwd_hooks=[(hook, boost)]):
        _, boosted = model.run_with_cache(tokens, names_filter=indices)
    assert (boosted[indices] == 5).any(dim=-1).all()
    assert not (cache[indices] == 5).any(dim=-1).all()
