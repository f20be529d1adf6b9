"""What is special to Gemma 1, Granite, OLMo, OLMo-3, SmolLM3 and StarCoder2, checked against HF's own modules
(run on the independent reference, or caught there with torch hooks), weight surgery and algebra."""

import copy
import inspect
import sys

import einops
import pytest
import torch
import torch.nn.functional as F

from bridge.kernel.errors import BridgeError
from bridge.testing import examples_of
from bridge_llama import (
    GemmaAdapter,
    GraniteAdapter,
    Olmo3Adapter,
    OlmoAdapter,
    SmolLM3Adapter,
    Starcoder2Adapter,
)

ATOL = 1e-5


def close(got, expected, atol=ATOL):
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def hf_layers(model):
    return model.hf_model.base_model.layers


def capture(module_outputs, run):
    """Run ``run()`` with torch forward hooks on ``{key: module}``; return ``{key: output}``."""
    seen = {}
    handles = [
        module.register_forward_hook(lambda m, a, out, key=key: seen.__setitem__(key, out))
        for key, module in module_outputs.items()
    ]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def rotated(model, layer, q, k, positions):
    """HF's own rotary embedding of ``q``/``k`` ``[b, p, n, d]`` at ``layer`` (per layer type where it differs)."""
    rotary = model.hf_model.base_model.rotary_emb
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        cos, sin = rotary(q, positions, model.hf_model.config.layer_types[layer])
    else:
        cos, sin = rotary(q, positions)
    apply = sys.modules[type(model.hf_model).__module__].apply_rotary_pos_emb
    rot_q, rot_k = apply(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    return rot_q.transpose(1, 2), rot_k.transpose(1, 2)


def expected_scores(model, cache, layer, scaling, window=None):
    """``rot_q · rot_k`` (GQA-repeated) × ``scaling``, masked causally (and to ``window``) with the dtype's minimum."""
    group = model.cfg.n_heads // model.cfg.n_key_value_heads
    k = einops.repeat(cache["rot_k", layer], "b p kv d -> b p (kv g) d", g=group)
    raw = torch.einsum("bqhd,bkhd->bhqk", cache["rot_q", layer], k) * scaling
    p = raw.shape[-1]
    q_pos, k_pos = torch.arange(p)[:, None], torch.arange(p)[None]
    allowed = (k_pos <= q_pos) & ((q_pos - k_pos < window) if window else True)
    return raw.masked_fill(~allowed, torch.finfo(raw.dtype).min), allowed


# --------------------------------------------------------------------------- Gemma 1


def test_gemma_embedding_norms_and_mlp(pair_for):
    """``hook_embed`` is after the √d_model scale (= HF's layer-0 input); the norms scale by ``1 + w``;
    the MLP is GELU-tanh gated; the head size (24) is not d_model / n_heads (16)."""
    pair = pair_for(GemmaAdapter)
    model = pair.bridge
    tokens = pair.tokens()
    layer = pair.reference.model.layers[0]
    seen = capture({"ln1": layer.input_layernorm}, lambda: pair.reference(tokens))
    hidden = pair.reference(tokens, output_hidden_states=True).hidden_states
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == "hook_embed" or n.startswith("blocks.0."))
    weight = model.hf_model.base_model.embed_tokens.weight
    close(cache["hook_embed"], weight[tokens] * model.cfg.d_model**0.5)
    close(cache["blocks.0.hook_resid_pre"], hidden[0])
    close(cache["blocks.0.ln1.hook_normalized"] * (1.0 + layer.input_layernorm.weight), seen["ln1"])
    mlp = (cache["blocks.0.mlp.hook_pre"], cache["blocks.0.mlp.hook_pre_linear"])
    close(cache["blocks.0.mlp.hook_post"], F.gelu(mlp[0], approximate="tanh") * mlp[1])
    assert model.cfg.d_head == 24 != model.cfg.d_model // model.cfg.n_heads
    assert cache["blocks.0.attn.hook_q"].shape == (*tokens.shape, model.cfg.n_heads, 24)


# --------------------------------------------------------------------------- Granite


def test_granite_embedding_hook_is_after_the_embedding_multiplier(pair_for):
    pair = pair_for(GraniteAdapter)
    model = pair.bridge
    tokens = pair.tokens()
    multiplier = model.hf_model.config.embedding_multiplier
    assert multiplier != 1.0
    _, cache = model.run_with_cache(tokens, names_filter=["hook_embed", "blocks.0.hook_resid_pre"])
    close(cache["hook_embed"], model.hf_model.base_model.embed_tokens.weight[tokens] * multiplier)
    close(cache["blocks.0.hook_resid_pre"], pair.reference(tokens, output_hidden_states=True).hidden_states[0])
    close(cache["hook_embed"], cache["blocks.0.hook_resid_pre"], atol=0)


def test_granite_embedding_patch_reaches_the_model_and_skips_inputs_embeds(pair_for):
    """A patch at ``hook_embed`` is what layer 0 receives: HF given ``patch / embedding_multiplier`` as
    ``inputs_embeds`` gives the same logits; HF calls given ``inputs_embeds`` do not fire ``hook_embed``."""
    pair = pair_for(GraniteAdapter)
    model = pair.bridge
    tokens = pair.tokens()
    multiplier = model.hf_model.config.embedding_multiplier
    embeds = torch.randn(*tokens.shape, model.cfg.d_model, generator=torch.Generator().manual_seed(4))
    got = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", lambda e, hook: embeds)])
    close(got, pair.reference(inputs_embeds=embeds / multiplier).logits, atol=1e-4)
    assert not torch.allclose(got, pair.reference(tokens).logits, atol=1e-3)
    fired = []
    with model.hooks(fwd_hooks=[("hook_embed", lambda e, hook: fired.append(1))]):
        model.hf_model(inputs_embeds=embeds)
        assert not fired
        model.hf_model(tokens)
    assert fired == [1]


def test_granite_sublayer_outputs_are_scaled_by_the_residual_multiplier(pair_for):
    """``hook_attn_out``/``hook_mlp_out`` are HF's attention and MLP outputs (caught on the reference) times
    ``residual_multiplier``; ``hook_result`` sums to the unscaled attention output; the cache analysis refuses
    per-head and per-neuron splits but decomposes per layer exactly."""
    pair = pair_for(GraniteAdapter)
    model = pair.bridge
    tokens = pair.tokens()
    m = model.hf_model.config.residual_multiplier
    assert m != 1.0 and model.blocks[0].residual_scale == m
    modules = {}
    for i, layer in enumerate(pair.reference.model.layers):
        modules["attn", i], modules["mlp", i] = layer.self_attn, layer.mlp
    seen = capture(modules, lambda: pair.reference(tokens))
    model.set_use_attn_result(True)
    try:
        logits, cache = model.run_with_cache(tokens)
    finally:
        model.set_use_attn_result(False)
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    for i in range(model.cfg.n_layers):
        close(cache["attn_out", i], seen["attn", i][0] * m)
        close(cache["mlp_out", i], seen["mlp", i] * m)
        close(cache["result", i].sum(2), seen["attn", i][0])
    with pytest.raises(BridgeError, match=r"scales its attn output by 0.22.*decompose_resid"):
        cache.stack_head_results()
    with pytest.raises(BridgeError, match=r"scales its mlp output by 0.22"):
        cache.get_neuron_results(0)
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels == ["embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    close(stack.sum(0), cache["resid_post", -1], atol=1e-4)


def test_granite_scores_use_the_attention_multiplier(pair_for):
    pair = pair_for(GraniteAdapter)
    model = pair.bridge
    scaling = model.hf_model.config.attention_multiplier
    assert scaling != model.cfg.d_head**-0.5
    _, cache = model.run_with_cache(pair.tokens(2, 10), names_filter=lambda n: ".attn.hook_" in n)
    for layer in range(model.cfg.n_layers):
        expected, _ = expected_scores(model, cache, layer, scaling)
        close(cache["attn_scores", layer], expected)
        close(cache["pattern", layer], torch.softmax(expected, dim=-1))


def test_granite_logits_are_the_unembedding_divided_by_logits_scaling(pair_for):
    pair = pair_for(GraniteAdapter)
    model = pair.bridge
    tokens = pair.tokens()
    logits, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    scaling = model.hf_model.config.logits_scaling
    assert scaling != 1.0
    final = model.ln_final.hf(cache["resid_post", 1])
    close(logits, final @ model.W_U + model.b_U)  # the logit lens gives the logits: W_U includes the division
    close(logits, model.hf_model.lm_head(final) / scaling)
    close(logits, pair.reference(tokens).logits, atol=1e-4)


# --------------------------------------------------------------------------- OLMo


def olmo_projections(pair, tokens):
    """Each reference layer's raw (unclipped) q/k/v projection outputs ``[b, p, n·d]``."""
    modules = {}
    for i, layer in enumerate(pair.reference.model.layers):
        for name in "qkv":
            modules[name, i] = getattr(layer.self_attn, f"{name}_proj")
    raw = {}
    for key, module in modules.items():  # the HF forward clamps the projection outputs in place: copy them
        module.register_forward_hook(lambda m, a, out, key=key: raw.__setitem__(key, out.clone()))
    try:
        pair.reference(tokens)
    finally:
        for module in modules.values():
            module._forward_hooks.clear()
    return raw


def test_olmo_qkv_hooks_are_after_clip_qkv(pair_for):
    pair = pair_for(OlmoAdapter)
    model = pair.bridge
    clip = model.hf_model.config.clip_qkv
    tokens = pair.tokens()
    raw = olmo_projections(pair, tokens)
    logits, cache = model.run_with_cache(tokens)
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    for (name, i), out in raw.items():
        n = model.cfg.n_heads if name == "q" else model.cfg.n_key_value_heads
        expected = einops.rearrange(out.clamp(-clip, clip), "b p (n d) -> b p n d", n=n)
        close(cache[name, i], expected, atol=0)
    assert (raw["q", 0].abs() > clip).float().mean() > 0.05, "the example config clips nothing"
    rot_q, rot_k = rotated(model, 0, cache["q", 0], cache["k", 0], torch.arange(tokens.shape[1])[None])
    close(cache["rot_q", 0], rot_q)
    close(cache["rot_k", 0], rot_k)


def test_olmo_patched_values_are_not_clipped_again(pair_for):
    """A patch at ``hook_v`` beyond ``clip_qkv`` is used as given: the reference with clipping done by torch hooks
    (and the patched layer's value output replaced) and ``clip_qkv`` off gives the same logits."""
    pair = pair_for(OlmoAdapter)
    model = pair.bridge
    clip = model.hf_model.config.clip_qkv
    tokens = pair.tokens()
    big = 10 * clip

    def patch(v, hook):
        v = v.clone()
        v[:, :, 1] = big
        return v

    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_v", patch)]):
        got, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_v")
    assert cache["v", 0][:, :, 1].eq(big).all()
    surgery = copy.deepcopy(pair.reference)
    surgery.config.clip_qkv = None
    d = model.cfg.d_head
    for i, layer in enumerate(surgery.model.layers):
        for name in "qkv":

            def clamp(m, a, out, patched=(i == 0 and name == "v")):
                out = out.clamp(-clip, clip)
                if patched:
                    out = out.clone()
                    out[..., d : 2 * d] = big
                return out

            getattr(layer.self_attn, f"{name}_proj").register_forward_hook(clamp)
    close(got, surgery(tokens).logits, atol=1e-4)
    assert not torch.allclose(got, pair.reference(tokens).logits, atol=1e-3)


def test_olmo_norms_are_parameter_free_layer_norms(pair_for):
    pair = pair_for(OlmoAdapter)
    model = pair.bridge
    tokens = pair.tokens()
    layer = pair.reference.model.layers[0]
    seen = capture({"ln1": layer.input_layernorm}, lambda: pair.reference(tokens))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0."))
    x = cache["resid_pre", 0]
    centred = x - x.mean(-1, keepdim=True)
    scale = (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
    close(cache["blocks.0.ln1.hook_scale"], scale)
    close(cache["blocks.0.ln1.hook_normalized"], seen["ln1"])
    assert model.cfg.normalization_type == "LN" and model.cfg.eps == 1e-5
    assert not list(layer.input_layernorm.parameters())


def test_olmo_without_clip_uses_the_projection_taps(tmp_path):
    """``clip_qkv=None`` (OLMo-1B, OLMo-7B): no forward re-expression, ``hook_q`` is the projection output."""
    from bridge.testing import make_pair, save_tiny_model

    example = examples_of(OlmoAdapter).example_config()
    config = type(example)(**{**example.to_diff_dict(), "clip_qkv": None})
    pair = make_pair(OlmoAdapter, directory=save_tiny_model(config, tmp_path))
    model = pair.bridge
    tokens = pair.tokens()
    raw = olmo_projections(pair, tokens)
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_q", lambda q, hook: None)]):
        assert "forward" not in hf_layers(model)[0].self_attn.__dict__
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_q")
    close(cache["q", 0], einops.rearrange(raw["q", 0], "b p (n d) -> b p n d", n=model.cfg.n_heads), atol=0)


# --------------------------------------------------------------------------- OLMo-3


def test_olmo3_sliding_layers_and_per_type_rope(pair_for):
    """Layer 0 (sliding) masks beyond the window, layer 1 (full) does not; ``hook_rot_q/k`` are each layer's
    own RoPE of ``hook_q_normed``/``hook_k_normed``; ``hook_pattern`` equals HF's eager attentions."""
    pair = pair_for(Olmo3Adapter)
    model = pair.bridge
    config = model.hf_model.config
    assert config.layer_types == ["sliding_attention", "full_attention"]
    p = 10
    tokens = pair.tokens(2, p)
    reference = pair.reference(tokens, output_attentions=True).attentions
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: ".attn.hook_" in n)
    for layer, window in ((0, config.sliding_window), (1, None)):
        rot_q, rot_k = rotated(
            model, layer, cache["q_normed", layer], cache["k_normed", layer], torch.arange(p).expand(2, p)
        )
        close(cache["rot_q", layer], rot_q)
        close(cache["rot_k", layer], rot_k)
        expected, allowed = expected_scores(model, cache, layer, model.cfg.d_head**-0.5, window)
        close(cache["attn_scores", layer], expected)
        assert torch.all(cache["pattern", layer][..., ~allowed] == 0)
        close(cache["pattern", layer], reference[layer])
    assert torch.all(cache["pattern", 1][:, :, -1, 0] > 0), "the full-attention layer must see the first token"


# --------------------------------------------------------------------------- SmolLM3


def test_smollm3_rot_hooks_equal_q_k_in_layers_without_rope(pair_for):
    pair = pair_for(SmolLM3Adapter)
    model = pair.bridge
    assert model.hf_model.config.no_rope_layers == [1, 0]
    tokens = pair.tokens(2, 9)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: ".attn.hook_" in n)
    rot_q, rot_k = rotated(model, 0, cache["q", 0], cache["k", 0], torch.arange(9).expand(2, 9))
    close(cache["rot_q", 0], rot_q)
    close(cache["rot_k", 0], rot_k)
    assert not torch.allclose(cache["rot_q", 0], cache["q", 0], atol=1e-3), "RoPE changed nothing in layer 0"
    close(cache["rot_q", 1], cache["q", 1], atol=0)
    close(cache["rot_k", 1], cache["k", 1], atol=0)
    for layer in range(2):
        expected, _ = expected_scores(model, cache, layer, model.cfg.d_head**-0.5)
        close(cache["attn_scores", layer], expected)


def test_smollm3_patch_at_rot_k_in_a_nope_layer_equals_weight_surgery(pair_for):
    """In the layer without RoPE, doubling ``hook_rot_k`` is doubling the key projection."""
    pair = pair_for(SmolLM3Adapter)
    model = pair.bridge
    tokens = pair.tokens()
    got = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_rot_k", lambda k, hook: k * 2.0)])
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[1].self_attn.k_proj.weight *= 2.0
    close(got, surgery(tokens).logits, atol=1e-4)
    assert not torch.allclose(got, pair.reference(tokens).logits, atol=1e-4)


# --------------------------------------------------------------------------- StarCoder2


def test_starcoder2_biased_layer_norms_projections_and_plain_mlp(pair_for):
    pair = pair_for(Starcoder2Adapter)
    model = pair.bridge
    tokens = pair.tokens()
    layer = pair.reference.model.layers[0]
    with torch.no_grad():  # non-trivial norm weights and biases, alike in both models
        generator = torch.Generator().manual_seed(5)
        for hf_layer in (layer, hf_layers(model)[0]):
            generator.manual_seed(5)
            for p in hf_layer.input_layernorm.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
    seen = capture(
        {"ln1": layer.input_layernorm, "o_proj": layer.self_attn.o_proj, "c_fc": layer.mlp.c_fc},
        lambda: pair.reference(tokens),
    )
    model.set_use_attn_result(True)
    try:
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0."))
    finally:
        model.set_use_attn_result(False)
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    norm = layer.input_layernorm
    close(cache["blocks.0.ln1.hook_normalized"] * norm.weight + norm.bias, seen["ln1"])
    x = seen["ln1"]
    q = x @ layer.self_attn.q_proj.weight.T + layer.self_attn.q_proj.bias
    assert layer.self_attn.q_proj.bias.abs().sum() > 0
    close(cache["q", 0], einops.rearrange(q, "b p (n d) -> b p n d", n=model.cfg.n_heads))
    close(cache["blocks.0.mlp.hook_pre"], seen["c_fc"])
    close(cache["blocks.0.mlp.hook_post"], F.gelu(seen["c_fc"], approximate="tanh"))
    assert not hasattr(model.blocks[0].mlp, "hook_pre_linear")
    close(cache["result", 0].sum(2) + layer.self_attn.o_proj.bias, seen["o_proj"])


def test_starcoder2_sliding_window_in_pattern(pair_for):
    pair = pair_for(Starcoder2Adapter)
    model = pair.bridge
    window = model.hf_model.config.sliding_window
    tokens = pair.tokens(1, 10)
    reference = pair.reference(tokens, output_attentions=True).attentions
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: ".attn.hook_" in n)
    for layer in range(model.cfg.n_layers):
        expected, allowed = expected_scores(model, cache, layer, model.cfg.d_head**-0.5, window)
        close(cache["attn_scores", layer], expected)
        assert torch.all(cache["pattern", layer][..., ~allowed] == 0)
        close(cache["pattern", layer], reference[layer])


def test_olmo3_batch_of_two_equals_each_alone(pair_for):
    """Hypothesis's find: two unpadded rows vs each alone differ by fp32 batch rounding of ~1e-5 on OLMo-3's
    layer-1 MLP activations (|x| ~ 16; HF's own differ by 8e-6), within the kit's few-ulp relative tolerance."""
    from bridge.testing import check_left_padding

    check_left_padding(pair_for(Olmo3Adapter), [2, 2], 0, False)
