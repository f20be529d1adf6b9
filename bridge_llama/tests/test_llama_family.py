"""What is special to the RoPE family, checked against HF's own code, weight surgery and algebra."""

import copy
import inspect
import sys

import einops
import pytest
import torch

from bridge_llama import (
    Gemma2Adapter,
    Gemma3Adapter,
    LlamaAdapter,
    MistralAdapter,
    Olmo2Adapter,
    Phi3Adapter,
    Qwen2Adapter,
    Qwen3Adapter,
)

ATOL = 1e-5
QK_NORMED = [Qwen3Adapter, Gemma3Adapter, Olmo2Adapter]


def close(got, expected, atol=ATOL):
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def hf_layers(model):
    return model.hf_model.base_model.layers


def hf_rotary(model, layer, x, positions):
    """cos, sin from the model's own ``rotary_emb`` (per layer type where RoPE differs by type)."""
    rotary = model.hf_model.base_model.rotary_emb
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        return rotary(x, positions, model.hf_model.config.layer_types[layer])
    return rotary(x, positions)


def hf_apply_rotary(model):
    return sys.modules[type(model.hf_model).__module__].apply_rotary_pos_emb


# --------------------------------------------------------------------------- RoPE


@pytest.mark.parametrize("adapter", [LlamaAdapter, Phi3Adapter, *QK_NORMED], ids=lambda a: a.architectures[0])
def test_rot_q_is_hf_rotary_of_the_pre_rotary_q(pair_for, adapter):
    """``hook_rot_q/k`` equal the model's own rotary embedding applied to ``hook_q/k`` (to the q/k norm
    outputs where the model has them), layer by layer (Gemma 3: local and global bases differ)."""
    model = pair_for(adapter).bridge
    b, p = 2, 9
    tokens = torch.randint(1, 128, (b, p), generator=torch.Generator().manual_seed(3))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: ".attn.hook_" in n)
    positions = torch.arange(p).expand(b, p)
    normed = adapter in QK_NORMED
    for layer in range(model.cfg.n_layers):
        q = cache[f"blocks.{layer}.attn.hook_q_normed" if normed else f"blocks.{layer}.attn.hook_q"]
        k = cache[f"blocks.{layer}.attn.hook_k_normed" if normed else f"blocks.{layer}.attn.hook_k"]
        cos, sin = hf_rotary(model, layer, q, positions)
        rot_q, rot_k = hf_apply_rotary(model)(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        close(cache["rot_q", layer], rot_q.transpose(1, 2))
        close(cache["rot_k", layer], rot_k.transpose(1, 2))
        assert not torch.allclose(cache["rot_q", layer], q, atol=1e-3), "RoPE changed nothing"
    if model.cfg.rotary_dim < model.cfg.d_head:  # Phi-3 partial rotary: the tail passes through
        close(cache["rot_q", 0][..., model.cfg.rotary_dim :], cache["q", 0][..., model.cfg.rotary_dim :])


def test_gemma3_local_and_global_layers_use_different_rope_bases(pair_for):
    model = pair_for(Gemma3Adapter).bridge
    assert model.hf_model.config.layer_types == ["sliding_attention", "full_attention"]
    x = torch.zeros(1, 8, 16)
    positions = torch.arange(8)[None]
    local_cos, _ = hf_rotary(model, 0, x, positions)
    global_cos, _ = hf_rotary(model, 1, x, positions)
    assert not torch.allclose(local_cos, global_cos)
    assert model.cfg.extra["rope_theta_local"] == 10_000.0 and model.cfg.extra["rope_theta"] == 1_000_000.0


@pytest.mark.parametrize("adapter", [LlamaAdapter, Phi3Adapter], ids=lambda a: a.architectures[0])
def test_patch_at_hook_q_flows_through_rope(pair_for, adapter):
    """Doubling ``hook_q`` doubles ``hook_rot_q`` (RoPE is linear) and gives the logits of the HF model
    whose query projection weights are doubled."""
    pair = pair_for(adapter)
    model = pair.bridge
    tokens = pair.tokens()
    names = lambda n: n.startswith("blocks.0.attn.hook_rot")  # noqa: E731
    _, clean = model.run_with_cache(tokens, names_filter=names)
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_q", lambda q, hook: q * 2.0)]):
        logits, patched = model.run_with_cache(tokens, names_filter=names)
    close(patched["rot_q", 0], clean["rot_q", 0] * 2.0)
    close(patched["rot_k", 0], clean["rot_k", 0])
    surgery = copy.deepcopy(pair.reference)
    attn = surgery.model.layers[0].self_attn
    rows = model.cfg.n_heads * model.cfg.d_head
    with torch.no_grad():
        (attn.q_proj.weight if hasattr(attn, "q_proj") else attn.qkv_proj.weight)[:rows] *= 2.0
    close(logits, surgery(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)


# --------------------------------------------------------------------------- q/k norms


@pytest.mark.parametrize("adapter", QK_NORMED, ids=lambda a: a.architectures[0])
def test_qk_norm_hooks_are_the_hf_norm_outputs(pair_for, adapter):
    """``hook_q_normed``/``hook_k_normed`` (``[b, p, heads, d_head]``) are the HF q/k norm modules applied to
    ``hook_q``/``hook_k``, over one head (Qwen3, Gemma 3) or all heads at once (OLMo-2)."""
    pair = pair_for(adapter)
    model = pair.bridge
    cfg = model.cfg
    tokens = pair.tokens(2, 7)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1.attn.hook_"))
    attn = hf_layers(model)[1].self_attn
    for name, norm, heads in (("q", attn.q_norm, cfg.n_heads), ("k", attn.k_norm, cfg.n_key_value_heads)):
        raw = cache[name, 1]
        if norm.weight.numel() == cfg.d_head:
            expected = norm(raw)
        else:
            expected = einops.rearrange(
                norm(einops.rearrange(raw, "b p n d -> b p (n d)")), "b p (n d) -> b p n d", n=heads
            )
        got = cache[f"blocks.1.attn.hook_{name}_normed"]
        assert got.shape == (2, 7, heads, cfg.d_head)
        close(got, expected)


@pytest.mark.parametrize("adapter", QK_NORMED, ids=lambda a: a.architectures[0])
def test_patch_at_hook_q_normed_equals_scaling_the_norm_weight(pair_for, adapter):
    """Doubling ``hook_q_normed`` equals doubling the q norm's effective weight in the HF model."""
    pair = pair_for(adapter)
    tokens = pair.tokens()
    logits = pair.bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_q_normed", lambda q, hook: q * 2.0)])
    surgery = copy.deepcopy(pair.reference)
    weight = surgery.model.layers[0].self_attn.q_norm.weight
    with torch.no_grad():
        if adapter is Gemma3Adapter:  # Gemma norms scale by (1 + w)
            weight.copy_(2.0 * (1.0 + weight) - 1.0)
        else:
            weight.mul_(2.0)
    close(logits, surgery(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)


# --------------------------------------------------------------------------- GQA


@pytest.mark.parametrize("adapter", [LlamaAdapter, Qwen2Adapter, Phi3Adapter], ids=lambda a: a.architectures[0])
def test_gqa_value_head_ablation_hits_exactly_its_query_group(pair_for, adapter):
    """Zeroing kv head j at ``hook_v`` zeroes ``hook_z`` for exactly the query heads of group j, leaves the
    other heads untouched, and equals zeroing the matching value rows (and bias) of the HF projection."""
    pair = pair_for(adapter)
    model = pair.bridge
    cfg = model.cfg
    group = cfg.n_heads // cfg.n_key_value_heads
    assert group > 1
    tokens = pair.tokens()
    j, d = 1, cfg.d_head

    def ablate(v, hook):
        v = v.clone()
        v[:, :, j] = 0.0
        return v

    _, clean = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_v", ablate)]):
        logits, patched = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
    hit = list(range(j * group, (j + 1) * group))
    others = [h for h in range(cfg.n_heads) if h not in hit]
    assert torch.all(patched["z", 0][:, :, hit] == 0)
    assert clean["z", 0][:, :, hit].abs().amax() > 0
    close(patched["z", 0][:, :, others], clean["z", 0][:, :, others])
    surgery = copy.deepcopy(pair.reference)
    attn = surgery.model.layers[0].self_attn
    if hasattr(attn, "v_proj"):
        proj, start = attn.v_proj, 0
    else:  # Phi-3: [q | k | v] in one projection
        proj, start = attn.qkv_proj, (cfg.n_heads + cfg.n_key_value_heads) * d
    rows = slice(start + j * d, start + (j + 1) * d)
    with torch.no_grad():
        proj.weight[rows] = 0.0
        if proj.bias is not None:
            proj.bias[rows] = 0.0
    close(logits, surgery(tokens).logits, atol=1e-4)


def test_qwen2_projection_biases_are_in_hook_q_k_v(pair_for):
    """With non-zero q/k/v biases (set alike in both models), ``hook_q/k/v`` are ``x W + b`` and the logits
    still equal HF's."""
    pair = pair_for(Qwen2Adapter)
    model = pair.bridge
    generator = torch.Generator().manual_seed(5)
    for hf in (model.hf_model, pair.reference):
        generator.manual_seed(5)
        with torch.no_grad():
            for layer in hf.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.copy_(torch.randn(proj.bias.shape, generator=generator))
    tokens = pair.tokens(2, 6)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0."))
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    attn = hf_layers(model)[0].self_attn
    x = hf_layers(model)[0].input_layernorm(cache["resid_pre", 0])
    for name, proj in (("q", attn.q_proj), ("k", attn.k_proj), ("v", attn.v_proj)):
        expected = x @ proj.weight.T + proj.bias
        close(cache[name, 0], einops.rearrange(expected, "b p (n d) -> b p n d", d=model.cfg.d_head))


@pytest.mark.parametrize("adapter", [LlamaAdapter, Gemma2Adapter], ids=lambda a: a.architectures[0])
def test_hook_result_sums_to_attention_output_under_gqa(pair_for, adapter):
    pair = pair_for(adapter)
    model = pair.bridge
    tokens = pair.tokens()
    expected = model(tokens)
    model.set_use_attn_result(True)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0."))
    close(logits, expected, atol=1e-4)
    result = cache["result", 0]
    assert result.shape == (*tokens.shape, model.cfg.n_heads, model.cfg.d_model)
    attn_sum = result.sum(2)
    if adapter is Gemma2Adapter:  # hook_attn_out is after the post-attention norm
        attn_sum = hf_layers(model)[0].post_attention_layernorm(attn_sum)
    close(attn_sum, cache["attn_out", 0])


# --------------------------------------------------------------------------- norm placement


@pytest.mark.parametrize("adapter", [Gemma2Adapter, Gemma3Adapter, Olmo2Adapter], ids=lambda a: a.architectures[0])
def test_attn_and_mlp_out_are_what_hf_adds_to_the_residual(pair_for, adapter):
    """Under post-norm placement ``hook_attn_out``/``hook_mlp_out`` are the outputs of HF's post-attention
    and post-feedforward norms (caught with torch hooks on the independent reference)."""
    pair = pair_for(adapter)
    tokens = pair.tokens()
    seen = {}
    handles = []
    for i, layer in enumerate(pair.reference.model.layers):
        for name, module in (
            ("attn_out", layer.post_attention_layernorm),
            ("mlp_out", layer.post_feedforward_layernorm),
        ):
            handles.append(module.register_forward_hook(lambda m, a, out, key=(name, i): seen.__setitem__(key, out)))
    try:
        pair.reference(tokens)
    finally:
        for handle in handles:
            handle.remove()
    _, cache = pair.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_attn_out", "hook_mlp_out")))
    for i in range(pair.bridge.cfg.n_layers):
        close(cache["attn_out", i], seen["attn_out", i])
        close(cache["mlp_out", i], seen["mlp_out", i])


@pytest.mark.parametrize("adapter", [Gemma2Adapter, Gemma3Adapter, Olmo2Adapter], ids=lambda a: a.architectures[0])
def test_norm_hooks_sit_where_the_readme_says(pair_for, adapter):
    """``ln1_post``/``ln2_post`` normalize the sublayer outputs; ``ln1``/``ln2`` (Gemma) their inputs."""
    pair = pair_for(adapter)
    model = pair.bridge
    _, cache = model.run_with_cache(pair.tokens(), names_filter=lambda n: n.startswith("blocks.0."))
    layer = hf_layers(model)[0]
    offset = 1.0 if adapter is not Olmo2Adapter else 0.0
    close(
        cache["blocks.0.ln2_post.hook_normalized"] * (offset + layer.post_feedforward_layernorm.weight),
        cache["mlp_out", 0],
    )
    close(
        cache["blocks.0.ln1_post.hook_normalized"] * (offset + layer.post_attention_layernorm.weight),
        cache["attn_out", 0],
    )
    if adapter is not Olmo2Adapter:
        x = cache["resid_pre", 0]
        close(
            cache["blocks.0.ln1.hook_normalized"],
            x / x.pow(2).mean(-1, keepdim=True).add(layer.input_layernorm.eps).sqrt(),
        )
        assert "blocks.0.ln2.hook_scale" in cache
    else:
        assert not any(".ln1." in n or ".ln2." in n for n in model.hook_dict)


# --------------------------------------------------------------------------- Gemma specifics


@pytest.mark.parametrize("adapter", [Gemma2Adapter, Gemma3Adapter], ids=lambda a: a.architectures[0])
def test_gemma_embedding_hook_is_after_the_sqrt_d_scale(pair_for, adapter):
    pair = pair_for(adapter)
    model = pair.bridge
    tokens = pair.tokens()
    _, cache = model.run_with_cache(tokens, names_filter=["hook_embed", "blocks.0.hook_resid_pre"])
    weight = model.hf_model.base_model.embed_tokens.weight
    close(cache["hook_embed"], weight[tokens] * model.cfg.d_model**0.5)
    hidden = pair.reference(tokens, output_hidden_states=True).hidden_states
    close(cache["blocks.0.hook_resid_pre"], hidden[0])


@pytest.mark.parametrize("adapter", [Gemma2Adapter, Gemma3Adapter], ids=lambda a: a.architectures[0])
def test_gemma_scores_are_scaled_softcapped_and_sliding_window_masked(pair_for, adapter):
    """``hook_attn_scores`` rebuilt from ``hook_rot_q/k``: scaled by ``query_pre_attn_scalar**-0.5``,
    soft-capped (Gemma 2), then masked causally and (layer 0, local) to the sliding window."""
    pair = pair_for(adapter)
    model = pair.bridge
    config = model.hf_model.config
    p = 10
    _, cache = model.run_with_cache(pair.tokens(2, p), names_filter=lambda n: ".attn.hook_" in n)
    group = model.cfg.n_heads // model.cfg.n_key_value_heads
    cap, window = config.attn_logit_softcapping, config.sliding_window
    q_pos, k_pos = torch.arange(p)[:, None], torch.arange(p)[None]
    for layer, local in ((0, True), (1, False)):
        k = einops.repeat(cache["rot_k", layer], "b p kv d -> b p (kv g) d", g=group)
        raw = torch.einsum("bqhd,bkhd->bhqk", cache["rot_q", layer], k) * config.query_pre_attn_scalar**-0.5
        capped = torch.tanh(raw / cap) * cap if cap is not None else raw
        allowed = (k_pos <= q_pos) & ((q_pos - k_pos < window) if local else True)
        expected = capped.masked_fill(~allowed, torch.finfo(capped.dtype).min)
        close(cache["attn_scores", layer], expected)
        if cap is not None:
            assert capped.abs().max() <= cap and (capped - raw).abs().max() > 1e-3, "soft-capping must bite"
        pattern = cache["pattern", layer]
        assert torch.all(pattern[..., ~allowed] == 0)
    assert torch.all(cache["pattern", 1][:, :, -1, 0] > 0), "the global layer must see the first token"


def test_gemma2_final_logits_are_softcapped(pair_for):
    pair = pair_for(Gemma2Adapter)
    model = pair.bridge
    tokens = pair.tokens()
    logits, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    cap = model.hf_model.config.final_logit_softcapping
    raw = model.unembed(model.ln_final.hf(cache["resid_post", 1]))
    close(logits, torch.tanh(raw / cap) * cap)
    assert logits.abs().max() <= cap < raw.abs().max()
    close(logits, pair.reference(tokens).logits, atol=1e-4)


def test_mistral_sliding_window_in_pattern_on_both_paths(pair_for):
    pair = pair_for(MistralAdapter)
    window = pair.bridge.hf_model.config.sliding_window
    tokens = pair.tokens(1, 10)
    reference = pair.reference(tokens, output_attentions=True).attentions
    _, cache = pair.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_pattern", "hook_z")))
    q_pos, k_pos = torch.arange(10)[:, None], torch.arange(10)[None]
    outside = (q_pos - k_pos >= window) | (k_pos > q_pos)
    for layer in range(2):
        assert torch.all(cache["pattern", layer][..., outside] == 0)
        close(cache["pattern", layer], reference[layer])
    native = pair.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))[1]
    close(native["z", 1], cache["z", 1])


# --------------------------------------------------------------------------- Phi-3 fused projections


def test_phi3_fused_projections_split_into_the_usual_hooks(pair_for):
    pair = pair_for(Phi3Adapter)
    model = pair.bridge
    cfg = model.cfg
    tokens = pair.tokens()
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0."))
    layer = hf_layers(model)[0]
    qkv = layer.self_attn.qkv_proj(layer.input_layernorm(cache["resid_pre", 0]))
    q, k, v = qkv.split(
        (cfg.n_heads * cfg.d_head, cfg.n_key_value_heads * cfg.d_head, cfg.n_key_value_heads * cfg.d_head), -1
    )
    for name, flat in (("q", q), ("k", k), ("v", v)):
        close(cache[name, 0], einops.rearrange(flat, "b p (n d) -> b p n d", d=cfg.d_head))
    gate_up = layer.mlp.gate_up_proj(layer.post_attention_layernorm(cache["resid_mid", 0]))
    close(cache["pre", 0], gate_up[..., : cfg.d_mlp])
    close(cache["blocks.0.mlp.hook_pre_linear"], gate_up[..., cfg.d_mlp :])
    close(cache["post", 0], layer.mlp.activation_fn(cache["pre", 0]) * cache["blocks.0.mlp.hook_pre_linear"])


def test_phi3_up_half_ablation_equals_weight_surgery(pair_for):
    pair = pair_for(Phi3Adapter)
    model = pair.bridge
    tokens = pair.tokens()
    with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_pre_linear", lambda t, hook: torch.zeros_like(t))]):
        logits, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_mlp_out")
    assert cache["mlp_out", 0].abs().max() == 0
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[0].mlp.gate_up_proj.weight[model.cfg.d_mlp :] = 0.0
    close(logits, surgery(tokens).logits, atol=1e-4)
