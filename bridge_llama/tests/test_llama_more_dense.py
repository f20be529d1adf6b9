"""What is special to Apertus (xIELU, q/k norms), Nemotron (LayerNorm1P, ReLU²), Persimmon (fused per-head q/k/v,
q/k LayerNorms, ReLU²), ERNIE 4.5 (RoPE on adjacent pairs), Seed-OSS (biases, head size) and EXAONE 4 (post-norms,
global layers without positions), against formulas written here, HF's own modules and weight surgery."""

import copy
import sys

import pytest
import torch
import torch.nn.functional as F

from bridge.testing.reference import layer_norm, rotate
from bridge_llama import (
    ApertusAdapter,
    Ernie4_5Adapter,
    Exaone4Adapter,
    NemotronAdapter,
    PersimmonAdapter,
    SeedOssAdapter,
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


def capture_inputs(modules, run):
    """Run ``run()`` with torch forward pre-hooks on ``{key: module}``; return ``{key: first input}``."""
    seen = {}
    handles = [
        module.register_forward_pre_hook(lambda m, args, key=key: seen.__setitem__(key, args[0]))
        for key, module in modules.items()
    ]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def hf_rotary(model, q, k, positions):
    """The model's own rotary embedding (its ``rotary_emb`` and ``apply_rotary_pos_emb``) of ``q``/``k``
    ``[b, p, n, d]``."""
    cos, sin = model.hf_model.base_model.rotary_emb(q, positions)
    apply = sys.modules[type(model.hf_model).__module__].apply_rotary_pos_emb
    rot_q, rot_k = apply(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    return rot_q.transpose(1, 2), rot_k.transpose(1, 2)


# --------------------------------------------------------------------------- activations


def xielu_by_hand(x, act):
    """xIELU (Huang et al. 2024) from its definition, with the module's trained ``alpha_p``/``alpha_n``:
    ``α_p x² + β x`` for ``x > 0``, ``α_n (e^{min(x, ε)} - 1 - x) + β x`` otherwise, ``α_p = softplus(a_p)``,
    ``α_n = β + softplus(a_n)``."""
    alpha_p = torch.log1p(torch.exp(act.alpha_p))
    alpha_n = act.beta + torch.log1p(torch.exp(act.alpha_n))
    negative = alpha_n * (torch.exp(torch.clamp(x, max=float(act.eps))) - 1 - x) + act.beta * x
    return torch.where(x > 0, alpha_p * x * x + act.beta * x, negative)


def test_apertus_hook_post_is_xielu_of_hook_pre(pair_for):
    """``mlp.hook_post`` ``[b, p, d_mlp]`` is xIELU of ``mlp.hook_pre`` (``up_proj``'s output), per layer with
    that layer's own trained ``alpha_p``/``alpha_n``, and is what ``down_proj`` reads."""
    pair = pair_for(ApertusAdapter)
    model = pair.bridge
    tokens = pair.tokens(2, 9)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: ".mlp.hook_" in n)
    reference_layers = pair.reference.model.layers
    reads = capture_inputs({i: reference_layers[i].mlp.down_proj for i in range(2)}, lambda: pair.reference(tokens))
    alphas = set()
    for layer in range(model.cfg.n_layers):
        act = hf_layers(model)[layer].mlp.act_fn
        pre, post = cache[f"blocks.{layer}.mlp.hook_pre"], cache[f"blocks.{layer}.mlp.hook_post"]
        assert post.shape == (2, 9, model.cfg.d_mlp)
        close(post, xielu_by_hand(pre, act))
        close(post, reads[layer])  # what the independent HF model's down_proj reads
        assert (pre < 0).any() and (pre > 0).any()  # both branches of xIELU are exercised
        alphas.add(float(act.alpha_p.detach()))
    assert len(alphas) == model.cfg.n_layers  # each layer's own alpha_p (sensitized apart)
    assert model.cfg.act_fn == "xielu"


@pytest.mark.parametrize("adapter", [NemotronAdapter, PersimmonAdapter], ids=lambda a: a.architectures[0])
def test_relu_squared_hook_post(pair_for, adapter):
    """``mlp.hook_post`` is ``relu(hook_pre)²`` (ungated ReLU² MLP): zero where ``hook_pre`` is negative."""
    pair = pair_for(adapter)
    model = pair.bridge
    _, cache = model.run_with_cache(pair.tokens(2, 9), names_filter=lambda n: ".mlp.hook_" in n)
    for layer in range(model.cfg.n_layers):
        pre, post = cache[f"blocks.{layer}.mlp.hook_pre"], cache[f"blocks.{layer}.mlp.hook_post"]
        close(post, F.relu(pre) ** 2, atol=1e-6)
        assert (pre < 0).any() and (post[pre < 0] == 0).all()
    assert model.cfg.act_fn == "relu2" and not model.cfg.gated_mlp


def test_apertus_patch_at_hook_post_equals_scaling_down_proj_columns(pair_for):
    """Doubling neuron 3 at ``hook_post`` equals doubling column 3 of ``down_proj`` in the HF model."""
    pair = pair_for(ApertusAdapter)
    tokens = pair.tokens()

    def double(post, hook):
        post = post.clone()
        post[..., 3] *= 2.0
        return post

    logits = pair.bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.1.mlp.hook_post", double)])
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[1].mlp.down_proj.weight[:, 3] *= 2.0
    close(logits, surgery(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)


# --------------------------------------------------------------------------- Nemotron's LayerNorm1P


def test_nemotron_norms_scale_by_one_plus_weight(pair_for):
    """Every norm is a layer norm that scales by ``1 + w``: ``hook_normalized · (1 + w) + b`` is HF's norm output,
    and ``hook_scale`` is ``sqrt(var + eps)`` of its input; a layer norm by hand with ``1 + w`` agrees."""
    pair = pair_for(NemotronAdapter)
    model = pair.bridge
    tokens = pair.tokens(2, 7)
    layer = pair.reference.model.layers[1]  # the independent HF model
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1."))
    norms = {"ln1": layer.input_layernorm, "ln2": layer.post_attention_layernorm}
    seen = capture(norms, lambda: pair.reference(tokens))
    for name, source in (("ln1", "hook_resid_pre"), ("ln2", "hook_resid_mid")):
        module = norms[name]
        x = cache[f"blocks.1.{source}"]
        normalized = cache[f"blocks.1.{name}.hook_normalized"]
        close(normalized * (module.weight + 1.0) + module.bias, seen[name], atol=1e-5)
        close(cache[f"blocks.1.{name}.hook_scale"], (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt())
        by_hand = (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        close(by_hand * (1.0 + module.weight) + module.bias, seen[name], atol=1e-5)
    params = model.tl_parameters()
    close(params["blocks.1.ln1.w"], layer.input_layernorm.weight + 1.0, atol=0)  # TransformerLens's w is 1 + w


def test_nemotron_process_weights_keeps_the_predictions(pair_for):
    """Folding the ``1 + w`` norms (and centring) leaves the log-probabilities as they were; the folded norms keep
    weight 0 (scale 1) and bias 0."""
    pair = pair_for(NemotronAdapter)
    model = pair.bridge
    tokens = pair.tokens()
    before = model(tokens).log_softmax(-1)
    model.process_weights()
    assert {"fold_ln", "center_writing_weights", "center_unembed"} <= set(model.cfg.extra["weight_processing"])
    close(model(tokens).log_softmax(-1), before, atol=1e-4)
    norm = hf_layers(model)[0].input_layernorm
    assert not norm.weight.any() and not norm.bias.any()


# --------------------------------------------------------------------------- q/k norms and RoPE


@pytest.mark.parametrize("adapter", [ApertusAdapter, Exaone4Adapter], ids=lambda a: a.architectures[0])
def test_qk_norms_before_rope(pair_for, adapter):
    """Apertus and EXAONE 4 norm q and k per head before RoPE: ``hook_q_normed`` is HF's ``q_norm`` of ``hook_q``,
    ``hook_rot_q`` HF's rotary of it; in EXAONE 4's global layers (no positions) ``hook_rot_q`` is ``hook_q_normed``."""
    pair = pair_for(adapter)
    model = pair.bridge
    b, p = 2, 9
    _, cache = model.run_with_cache(pair.tokens(b, p), names_filter=lambda n: ".attn.hook_" in n)
    layer_types = getattr(model.hf_model.config, "layer_types", None) or ["full_attention"] * model.cfg.n_layers
    global_layers = 0
    for layer in range(model.cfg.n_layers):
        attn = hf_layers(model)[layer].self_attn
        q_normed, k_normed = cache[f"blocks.{layer}.attn.hook_q_normed"], cache[f"blocks.{layer}.attn.hook_k_normed"]
        close(q_normed, attn.q_norm(cache["q", layer]))
        close(k_normed, attn.k_norm(cache["k", layer]))
        if adapter is Exaone4Adapter and layer_types[layer] == "full_attention":
            close(cache["rot_q", layer], q_normed, atol=0)
            close(cache["rot_k", layer], k_normed, atol=0)
            global_layers += 1
            continue
        rot_q, rot_k = hf_rotary(model, q_normed, k_normed, torch.arange(p).expand(b, p))
        close(cache["rot_q", layer], rot_q)
        close(cache["rot_k", layer], rot_k)
        assert not torch.allclose(cache["rot_q", layer][:, 1:], q_normed[:, 1:], atol=1e-3)
    assert global_layers == (1 if adapter is Exaone4Adapter else 0)


def test_exaone4_sublayer_outputs_are_post_normed_and_the_window_slides(pair_for):
    """``hook_attn_out``/``hook_mlp_out`` are after ``post_attention_layernorm``/``post_feedforward_layernorm`` (what is
    added to the stream); layer 0 slides over 4 keys, layer 1 sees every earlier key."""
    pair = pair_for(Exaone4Adapter)
    model = pair.bridge
    tokens = pair.tokens(2, 9)
    layer = pair.reference.model.layers[0]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: "hook_" in n)
    seen = capture({"attn": layer.self_attn, "mlp": layer.mlp}, lambda: pair.reference(tokens))
    close(cache["blocks.0.hook_attn_out"], layer.post_attention_layernorm(seen["attn"][0]))
    close(cache["blocks.0.hook_mlp_out"], layer.post_feedforward_layernorm(seen["mlp"]))
    window = model.hf_model.config.sliding_window
    assert torch.all(cache["pattern", 0].tril(-window) == 0)
    assert torch.all(cache["pattern", 1].tril(-window)[..., window:, 0] > 0)


def test_ernie_rot_q_k_are_rope_on_adjacent_pairs_by_hand(pair_for):
    """ERNIE 4.5 rotates adjacent pairs ``(x0, x1), (x2, x3)…`` (computed here) and says so in the config."""
    pair = pair_for(Ernie4_5Adapter)
    model = pair.bridge
    assert model.cfg.rotary_adjacent_pairs
    _, cache = model.run_with_cache(pair.tokens(2, 9), names_filter=lambda n: ".attn.hook_" in n)
    theta = model.hf_model.config.rope_parameters["rope_theta"]
    for layer in range(model.cfg.n_layers):
        for name in ("q", "k"):
            close(cache[f"rot_{name}", layer], rotate(cache[name, layer], theta, interleaved=True))
            halves = rotate(cache[name, layer], theta, interleaved=False)
            assert not torch.allclose(cache[f"rot_{name}", layer], halves, atol=1e-3)


def test_ernie_and_seed_oss_projection_biases_are_in_the_hooks(pair_for):
    """ERNIE 4.5 (``use_bias``) and Seed-OSS (``attention_bias``, ``attention_out_bias``, ``mlp_bias``) bias their
    projections: ``hook_q/k/v`` and ``hook_pre`` include the bias, ``b_O`` is ``o_proj``'s; Seed-OSS's head size
    (24) is not ``d_model / n_heads`` (16)."""
    for adapter in (Ernie4_5Adapter, SeedOssAdapter):
        pair = pair_for(adapter)
        model = pair.bridge
        _, cache = model.run_with_cache(pair.tokens(2, 5), names_filter=lambda n: n.startswith("blocks.0."))
        attn, mlp = hf_layers(model)[0].self_attn, hf_layers(model)[0].mlp
        x = cache["blocks.0.ln1.hook_normalized"] * hf_layers(model)[0].input_layernorm.weight
        q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias).unflatten(-1, (model.cfg.n_heads, -1))
        close(cache["q", 0], q)
        assert attn.q_proj.bias is not None and attn.q_proj.bias.abs().max() > 0
        close(model.blocks[0].attn.b_O, attn.o_proj.bias, atol=0)
        assert mlp.gate_proj.bias is not None
    assert model.cfg.d_head == 24 != model.cfg.d_model // model.cfg.n_heads
    assert cache["z", 0].shape == (2, 5, model.cfg.n_heads, 24)


def test_seed_oss_dropout_sits_inside_the_sublayers(pair_for):
    """Seed-OSS drops out inside its attention and MLP modules (after ``o_proj``/``down_proj``), so
    ``hook_attn_out``/``hook_mlp_out`` are after the dropout: in training mode the residual algebra still holds."""
    pair = pair_for(SeedOssAdapter)
    model = pair.bridge
    for module in model.hf_model.modules():
        for name in ("residual_dropout", "attention_dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.5)
    model.hf_model.train()
    try:
        torch.manual_seed(0)
        _, cache = model.run_with_cache(pair.tokens(2, 6), names_filter=lambda n: "resid" in n or "_out" in n)
    finally:
        model.hf_model.eval()
    close(cache["blocks.0.hook_resid_mid"], cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"])
    close(cache["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_mid"] + cache["blocks.0.hook_mlp_out"])
    assert (cache["blocks.0.hook_mlp_out"] == 0).float().mean() > 0.2  # half of it dropped


# --------------------------------------------------------------------------- Persimmon


def test_persimmon_fused_qkv_is_split_per_head(pair_for):
    """Persimmon's ``query_key_value`` output, viewed ``[b, p, heads, 3, d]`` as HF splits it, is ``hook_q``/
    ``hook_k``/``hook_v``; ``hook_q_normed``/``hook_k_normed`` are LayerNorms by hand of them; only the first half of
    each head rotates (halves pairing), the rest passes through."""
    pair = pair_for(PersimmonAdapter)
    model = pair.bridge
    cfg = model.cfg
    b, p = 2, 7
    tokens = pair.tokens(b, p)
    attn = pair.reference.model.layers[0].self_attn
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0.attn."))
    seen = capture({"qkv": attn.query_key_value}, lambda: pair.reference(tokens))
    fused = seen["qkv"].view(b, p, cfg.n_heads, 3, cfg.d_head)
    for i, name in enumerate(("q", "k", "v")):
        close(cache[name, 0], fused[..., i, :])
    close(cache["blocks.0.attn.hook_q_normed"], layer_norm(cache["q", 0], attn.q_layernorm))
    close(cache["blocks.0.attn.hook_k_normed"], layer_norm(cache["k", 0], attn.k_layernorm))
    r = cfg.rotary_dim
    assert r == cfg.d_head // 2 and cfg.n_key_value_heads == cfg.n_heads
    theta = model.hf_model.config.rope_parameters["rope_theta"]
    close(cache["rot_q", 0], rotate(cache["blocks.0.attn.hook_q_normed"], theta, rotary_dim=r))
    close(cache["rot_q", 0][..., r:], cache["blocks.0.attn.hook_q_normed"][..., r:], atol=0)


def test_persimmon_patch_at_hook_v_equals_weight_surgery(pair_for):
    """Zeroing head 2's value at ``hook_v`` equals zeroing its value rows (``[h, 3, d]`` layout) of
    ``query_key_value`` in the HF model."""
    pair = pair_for(PersimmonAdapter)
    model = pair.bridge
    cfg = model.cfg
    tokens = pair.tokens()

    def zero_head(v, hook):
        v = v.clone()
        v[:, :, 2] = 0.0
        return v

    logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_v", zero_head)])
    surgery = copy.deepcopy(pair.reference)
    qkv = surgery.model.layers[0].self_attn.query_key_value
    rows = torch.arange(cfg.n_heads * 3 * cfg.d_head).view(cfg.n_heads, 3, cfg.d_head)[2, 2]
    with torch.no_grad():
        qkv.weight[rows] = 0.0
        qkv.bias[rows] = 0.0
    close(logits, surgery(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)
