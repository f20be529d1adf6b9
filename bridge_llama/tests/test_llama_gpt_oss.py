"""GPT-OSS beyond the conformance kit: the attention sinks (``hook_sink_logits``, patterns whose rows sum to less
than 1), YaRN RoPE at ``hook_rot_q/k``, the biased top-k-then-softmax router, the experts' interleaved and
transposed weights read through the views (with the clamped SwiGLU biting), and a forward pass written from the
views alone. Every expected value comes from the HF model: its outputs, its modules, its autograd, weight surgery."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers.models.gpt_oss.modeling_gpt_oss import apply_rotary_pos_emb

import bridge
from bridge.testing import examples_of, save_tiny_model
from bridge_llama import GptOssAdapter

ROUTING = ("hook_router_logits", "hook_expert_indices", "hook_expert_weights")


def close(got, expected, atol=1e-5):
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def gpt_oss_rule(logits, k):
    """GPT-OSS's selection, written out here: the top k logits, then a softmax over those k only."""
    top, indices = torch.topk(logits, k, dim=-1)
    return top.softmax(-1), indices


@pytest.fixture
def pair(pair_for):
    return pair_for(GptOssAdapter)


@pytest.fixture(scope="module")
def clamped_dir(tmp_path_factory):
    """The kit's clamped-SwiGLU variant: a limit of 0.3, so most expert pre-activations are clamped."""
    config = examples_of(GptOssAdapter).conformance_configs()["gpt-oss-clamped-swiglu"]
    return save_tiny_model(config, tmp_path_factory.mktemp("gpt-oss-clamped"))


def embed_and_norm(reference, tokens):
    """HF's input of layer 0's attention: ``input_layernorm(embed_tokens(tokens))`` ``[b, p, d_model]``."""
    return reference.model.layers[0].input_layernorm(reference.model.embed_tokens(tokens))


# --- attention sinks ----------------------------------------------------------------------------------------


def test_sink_logits_hook_holds_each_heads_sink_per_query(pair):
    model = pair.bridge
    tokens = pair.tokens(2, 7)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_sink_logits"))
    for layer in range(model.cfg.n_layers):
        sinks = pair.reference.model.layers[layer].self_attn.sinks.detach()
        got = cache[f"blocks.{layer}.attn.hook_sink_logits"]
        assert got.shape == (2, 7, model.cfg.n_heads)
        close(got, sinks.expand(2, 7, -1))


def test_pattern_rows_sum_to_what_the_sink_leaves(pair):
    """Rows of ``hook_pattern`` sum to ``1 - sink share``; with the sink, softmax over ``[scores | sink]`` is HF's
    attention (its ``attentions`` output), so the scores hook is over the real keys only."""
    model = pair.bridge
    tokens = pair.tokens()
    ref = pair.run_reference(tokens, output_attentions=True)
    names = ("hook_attn_scores", "hook_sink_logits", "hook_pattern")
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(names))
    for layer in range(model.cfg.n_layers):
        scores = cache[f"blocks.{layer}.attn.hook_attn_scores"]  # [b, h, q, k]
        sinks = cache[f"blocks.{layer}.attn.hook_sink_logits"].transpose(1, 2)[..., None]  # [b, h, q, 1]
        assert scores.shape[-1] == tokens.shape[1]
        full = torch.cat([scores, sinks], dim=-1).softmax(-1)
        close(full[..., :-1], ref.attentions[layer])
        row_sums = cache[f"blocks.{layer}.attn.hook_pattern"].sum(-1)
        close(row_sums, 1 - full[..., -1])
        assert (row_sums < 1).all() and row_sums.mean() < 0.95


@pytest.mark.parametrize("value", [2.0, float("-inf")])
def test_patching_a_sink_logit_equals_setting_the_sink_parameter(pair, value):
    """Setting head 1's sink of layer 0 at ``hook_sink_logits`` equals HF with that ``sinks`` entry set; ``-inf``
    removes the sink, and that head's pattern rows then sum to 1."""
    model = pair.bridge
    tokens = pair.tokens()

    def set_head_1(sinks, hook):
        sinks = sinks.clone()
        sinks[:, :, 1] = value
        return sinks

    fwd = [("blocks.0.attn.hook_sink_logits", set_head_1)]
    with model.hooks(fwd_hooks=fwd):
        logits, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[0].self_attn.sinks[1] = value
    close(logits, surgery(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-3)
    if value == float("-inf"):
        close(cache["blocks.0.attn.hook_pattern"][:, 1].sum(-1), torch.ones(tokens.shape))


def test_sink_logits_gradient_is_hfs_gradient_of_the_sinks(pair):
    """A backward hook on ``hook_sink_logits``, summed over batch and queries, is HF autograd's d loss / d sinks."""
    model = pair.bridge
    tokens = pair.tokens(1, 9)
    grads = {}
    loss = model.run_with_hooks(
        tokens,
        bwd_hooks=[("blocks.1.attn.hook_sink_logits", lambda g, hook: grads.__setitem__("g", g))],
        return_type="loss",
    )
    loss.backward()
    reference = copy.deepcopy(pair.reference)
    reference(tokens, labels=tokens).loss.backward()
    expected = reference.model.layers[1].self_attn.sinks.grad
    assert expected.abs().max() > 0
    close(grads["g"].sum((0, 1)), expected, atol=1e-6)


def test_sinks_survive_generation_and_stack_along_positions(pair):
    """Generating with the cache, each step's ``hook_sink_logits`` is ``[b, 1, h]``; the stacked cache equals a full
    forward's, and the greedy tokens are HF's own."""
    model = pair.bridge
    prompt = pair.tokens(1, 5)
    names = ("hook_sink_logits", "hook_pattern")
    tokens, steps = model.generate(
        prompt,
        max_new_tokens=4,
        do_sample=False,
        verbose=False,
        return_type="tokens",
        names_filter=lambda n: n.endswith(names),
    )
    expected_tokens = pair.reference.generate(prompt, max_new_tokens=4, do_sample=False, attention_mask=None)
    assert torch.equal(tokens, expected_tokens)
    assert steps[1]["blocks.0.attn.hook_sink_logits"].shape == (1, 1, model.cfg.n_heads)
    stacked = steps.stack()
    _, full = model.run_with_cache(tokens[:, :-1], names_filter=lambda n: n.endswith(names))
    for name in ("blocks.0.attn.hook_sink_logits", "blocks.1.attn.hook_pattern", "blocks.0.attn.hook_pattern"):
        close(stacked[name], full[name], atol=1e-5)


def test_bf16_with_every_hook_cached_is_hfs_eager_bit_for_bit(pair):
    """In bf16 the sink softmax runs in bf16 (after subtracting the row maximum) as HF's does: caching every hook
    (so the seam's eager path, the block wirings and the re-run routing) changes no bit of HF's logits."""
    directory = pair.bridge.hf_model.name_or_path
    model = bridge.load(directory, adapter=GptOssAdapter, dtype=torch.bfloat16)
    reference = type(pair.reference).from_pretrained(directory, dtype=torch.bfloat16, attn_implementation="eager")
    tokens = pair.tokens()
    logits, cache = model.run_with_cache(tokens)
    assert "blocks.1.attn.hook_sink_logits" in cache and logits.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(logits, reference.eval()(tokens).logits)


def test_sliding_layers_see_a_window_full_layers_everything(pair):
    model = pair.bridge
    window = model.hf_model.config.sliding_window
    tokens = pair.tokens(1, 10)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    query, key = torch.arange(10)[:, None], torch.arange(10)[None, :]
    outside = (query - key >= window) & (key <= query)
    assert model.hf_model.config.layer_types == ["sliding_attention", "full_attention"]
    assert (cache["pattern", 0][..., outside] == 0).all()
    assert (cache["pattern", 1][..., outside] > 0).all()


# --- YaRN RoPE -------------------------------------------------------------------------------------------------


def test_rot_q_and_k_are_hfs_yarn_rotation(pair):
    """``hook_rot_q/k`` equal HF's projections rotated by HF's YaRN cos/sin (attention scaling included)."""
    model = pair.bridge
    tokens = pair.tokens(2, 12)
    rotary = pair.reference.model.rotary_emb
    assert rotary.rope_type == "yarn" and rotary.attention_scaling != 1.0
    d = model.cfg.d_head
    default = 150_000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    assert not torch.allclose(rotary.inv_freq, default)  # YaRN moved the frequencies
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0.attn.hook_rot"))
    attn = pair.reference.model.layers[0].self_attn
    with torch.no_grad():
        x = embed_and_norm(pair.reference, tokens)
        q = attn.q_proj(x).unflatten(-1, (-1, d)).transpose(1, 2)  # [b, h, p, d]
        k = attn.k_proj(x).unflatten(-1, (-1, d)).transpose(1, 2)
        cos, sin = rotary(x, torch.arange(12)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    close(cache["blocks.0.attn.hook_rot_q"], q.transpose(1, 2))
    close(cache["blocks.0.attn.hook_rot_k"], k.transpose(1, 2))


# --- router -----------------------------------------------------------------------------------------------------


def test_routing_hooks_agree_with_hf_output_router_logits(pair):
    model = pair.bridge
    tokens = pair.tokens(2, 9)
    ref = pair.reference(tokens, output_router_logits=True)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(ROUTING))
    close(logits, ref.logits, atol=1e-4)
    k = model.cfg.extra["experts_per_token"]
    for layer in range(model.cfg.n_layers):
        router_logits = cache[f"blocks.{layer}.mlp.hook_router_logits"].flatten(0, 1)
        close(router_logits, ref.router_logits[layer])
        weights, indices = gpt_oss_rule(ref.router_logits[layer], k)
        assert torch.equal(cache[f"blocks.{layer}.mlp.hook_expert_indices"].flatten(0, 1), indices)
        close(cache[f"blocks.{layer}.mlp.hook_expert_weights"].flatten(0, 1), weights)


def test_patching_router_logits_reroutes_with_gpt_oss_rule(pair):
    """Masking expert e in layer 0's router logits: e never runs, and the logits are HF's with a router that
    masks e the same way (weight surgery on the router's forward)."""
    model = pair.bridge
    tokens = pair.tokens(2, 10)
    _, clean = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_expert_indices")
    e = int(torch.bincount(clean["blocks.0.mlp.hook_expert_indices"].flatten(), minlength=4).argmax())

    def mask(logits, hook):
        return logits.index_fill(-1, torch.tensor([e]), float("-inf"))

    with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_router_logits", mask)]):
        logits, patched = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_expert_indices")
    assert not (patched["blocks.0.mlp.hook_expert_indices"] == e).any()
    reference = copy.deepcopy(pair.reference)
    router = reference.model.layers[0].mlp.router

    def masked_router(hidden):
        router_logits = F.linear(hidden, router.weight, router.bias).index_fill(-1, torch.tensor([e]), float("-inf"))
        return (router_logits, *gpt_oss_rule(router_logits, router.top_k))

    router.forward = masked_router
    close(logits, reference(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)


def test_zeroing_one_experts_outputs_equals_zeroing_its_weights_and_bias(pair):
    """Ablating expert e at ``hook_expert_outputs`` equals zeroing its down projection and its bias in HF."""
    model = pair.bridge
    model.set_opt_in("hook_expert_outputs", True)
    tokens = pair.tokens()
    e = 1
    seen = {}
    fwd = [
        ("blocks.1.mlp.hook_expert_indices", lambda t, hook: seen.__setitem__("i", t)),
        ("blocks.1.mlp.hook_expert_outputs", lambda t, hook: t * (seen["i"] != e)[..., None]),
    ]
    logits = model.run_with_hooks(tokens, fwd_hooks=fwd)
    assert (seen["i"] == e).any()
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[1].mlp.experts.down_proj[e].zero_()
        surgery.model.layers[1].mlp.experts.down_proj_bias[e].zero_()
    close(logits, surgery(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)


# --- weight views ------------------------------------------------------------------------------------------------


def clamped_swiglu_expert(x, mlp, e, alpha, limit):
    """Expert ``e`` from the views alone: ``(clamp(up) + 1) · g σ(α g)`` with ``g = min(gate, limit)``."""
    gate = (x @ mlp.W_gate[e] + mlp.b_gate[e]).clamp(max=limit)
    up = (x @ mlp.W_in[e] + mlp.b_in[e]).clamp(-limit, limit)
    return ((up + 1) * gate * torch.sigmoid(alpha * gate)) @ mlp.W_out[e] + mlp.b_out[e]


def test_expert_views_follow_the_interleaved_transposed_layout(clamped_dir):
    """Per expert, the views with the clamped SwiGLU written out equal HF's experts module sending every token to
    that expert; the clamp bites on this model, and a half-split reading of ``gate_up_proj`` would be wrong."""
    model = bridge.load(clamped_dir, adapter=GptOssAdapter)
    reference = examples_of(GptOssAdapter).reference_model(type(model.hf_model), clamped_dir)
    cfg = model.cfg
    alpha, limit = cfg.extra["swiglu_alpha"], cfg.extra["swiglu_limit"]
    mlp = model.blocks[0].mlp
    experts = reference.model.layers[0].mlp.experts
    n_experts, d_mlp = cfg.extra["n_experts"], cfg.d_mlp
    assert mlp.W_gate.shape == mlp.W_in.shape == (n_experts, cfg.d_model, d_mlp)
    assert mlp.W_out.shape == (n_experts, d_mlp, cfg.d_model) and mlp.b_out.shape == (n_experts, cfg.d_model)
    close(mlp.W_gate[2][:, 5], experts.gate_up_proj[2][:, 10])  # gate column j sits at 2j, up at 2j + 1
    close(mlp.b_in[3][4], experts.gate_up_proj_bias[3][9])
    x = torch.randn(11, cfg.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert ((x @ mlp.W_in + mlp.b_in[:, None]).abs() > limit).float().mean() > 0.3
        for e in range(n_experts):
            expected = experts(x, torch.full((11, 1), e), torch.ones(11, 1))
            close(clamped_swiglu_expert(x, mlp, e, alpha, limit), expected)
        gate = experts.gate_up_proj[0].chunk(2, dim=-1)[0]  # the concatenated reading, wrong here
        assert not torch.allclose(mlp.W_gate[0], gate)


def attention_from_views(x, attn, cfg, cos, sin, window):
    """One GPT-OSS attention from its weight views and HF's sink parameter: ``x`` ``[b, p, d_model]``."""
    q = torch.einsum("bpm,hmd->bhpd", x, attn.W_Q) + attn.b_Q[:, None]
    k = torch.einsum("bpm,hmd->bhpd", x, attn.W_K) + attn.b_K[:, None]  # GQA: expanded to n_heads
    v = torch.einsum("bpm,hmd->bhpd", x, attn.W_V) + attn.b_V[:, None]
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    scores = q @ k.transpose(-1, -2) * cfg.d_head**-0.5  # [b, h, q, k]
    p = x.shape[1]
    query, key = torch.arange(p)[:, None], torch.arange(p)[None, :]
    masked = (key > query) | ((query - key >= window) if window else False)
    sinks = attn.hf.sinks[None, :, None, None].expand(*scores.shape[:-1], 1)
    probs = torch.cat([scores.masked_fill(masked, float("-inf")), sinks], dim=-1).softmax(-1)[..., :-1]
    z = probs @ v  # [b, h, q, d]
    return torch.einsum("bhqd,hdm->bqm", z, attn.W_O) + attn.b_O


def moe_from_views(x, mlp, cfg):
    """One GPT-OSS MoE layer from its views: biased router, top k, softmax over the k, clamped SwiGLU experts."""
    weights, chosen = gpt_oss_rule(x @ mlp.W_router + mlp.b_router, cfg.extra["experts_per_token"])
    alpha, limit = cfg.extra["swiglu_alpha"], cfg.extra["swiglu_limit"]
    per_expert = torch.stack(
        [clamped_swiglu_expert(x, mlp, e, alpha, limit) for e in range(cfg.extra["n_experts"])], dim=-2
    )  # [b, p, n_experts, d_model]
    dense = torch.zeros(*x.shape[:-1], cfg.extra["n_experts"]).scatter(-1, chosen, weights)
    return torch.einsum("bpe,bped->bpd", dense, per_expert)


def rms(x, norm):
    return x / (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt() * norm.hf.weight


@pytest.mark.parametrize("variant", ["example", "gpt-oss-clamped-swiglu"])
def test_forward_from_weight_views_reproduces_hf_logits(variant, tmp_path):
    config = (
        examples_of(GptOssAdapter).example_config()
        if variant == "example"
        else examples_of(GptOssAdapter).conformance_configs()[variant]
    )
    directory = save_tiny_model(config, tmp_path)
    model = bridge.load(directory, adapter=GptOssAdapter)
    reference = examples_of(GptOssAdapter).reference_model(type(model.hf_model), directory)
    cfg = model.cfg
    tokens = torch.tensor([[0, 5, 17, 42, 9, 77, 3, 11, 64, 2], [0, 8, 8, 100, 2, 64, 31, 7, 7, 120]])
    with torch.no_grad():
        resid = model.W_E[tokens]
        cos, sin = reference.model.rotary_emb(resid, torch.arange(tokens.shape[1])[None])
        for layer, block in enumerate(model.blocks):
            sliding = config.layer_types[layer] == "sliding_attention"
            window = config.sliding_window if sliding else None
            resid = resid + attention_from_views(rms(resid, block.ln1), block.attn, cfg, cos, sin, window)
            resid = resid + moe_from_views(rms(resid, block.ln2), block.mlp, cfg)
        logits = rms(resid, model.ln_final) @ model.W_U + model.b_U
        close(logits, reference(tokens).logits, atol=1e-4)


# --- weight processing ---------------------------------------------------------------------------------------------


def test_process_weights_folds_norms_into_sinks_layers_and_interleaved_experts(pair):
    """``process_weights()`` folds every norm (the attention module's own ``sinks`` do not read ``ln1``) and keeps
    HF's log-probs; each expert's gate and up columns, and the router, are scaled by ``ln2``'s weight."""
    model = pair.bridge
    ln2 = pair.reference.model.layers[1].post_attention_layernorm.weight.detach()
    model.process_weights()
    assert set(model.cfg.extra["weight_processing"]) == {"fold_ln", "center_unembed"}
    tokens = pair.tokens()
    with torch.no_grad():
        close(model(tokens).log_softmax(-1), pair.reference(tokens).logits.log_softmax(-1), atol=1e-4)
    ref_experts = pair.reference.model.layers[1].mlp.experts
    experts = model.hf_model.model.layers[1].mlp.experts
    close(experts.gate_up_proj, ref_experts.gate_up_proj * ln2[:, None])  # [E, d_model, 2·d_mlp]
    close(model.hf_model.model.layers[1].mlp.router.weight, pair.reference.model.layers[1].mlp.router.weight * ln2)


def test_fold_value_biases_is_refused_because_sinks_make_it_inexact(pair):
    """Refused before anything changes; and the fold done by hand on HF's weights would change the logits."""
    model = pair.bridge
    before = {name: p.detach().clone() for name, p in model.hf_model.named_parameters()}
    with pytest.raises(bridge.analysis.processing.WeightProcessingError, match="attention has sinks"):
        model.fold_value_biases()
    assert all(torch.equal(p, before[name]) for name, p in model.hf_model.named_parameters())
    surgery = copy.deepcopy(pair.reference)
    n_heads, n_kv, d = model.cfg.n_heads, model.cfg.n_key_value_heads, model.cfg.d_head
    with torch.no_grad():
        for layer in surgery.model.layers:
            attn = layer.self_attn
            b_v = attn.v_proj.bias.view(n_kv, d).repeat_interleave(n_heads // n_kv, dim=0)  # [h, d]
            attn.o_proj.bias += torch.einsum("hd,hdm->m", b_v, attn.o_proj.weight.T.reshape(n_heads, d, -1))
            attn.v_proj.bias.zero_()
    tokens = pair.tokens()
    with torch.no_grad():
        moved = (surgery(tokens).logits.log_softmax(-1) - pair.reference(tokens).logits.log_softmax(-1)).abs().max()
    assert moved > 1e-3


@pytest.mark.parametrize("implementation", ["eager", "batched_mm", "grouped_mm"])
def test_moe_hooks_under_every_experts_implementation(pair, implementation):
    """HF's batched and grouped expert kernels read the same interleaved, transposed weights: the hooks (routing
    re-run, per-slot expert outputs) and the logits agree with the eager HF reference under each."""
    model = bridge.load(pair.bridge.hf_model.name_or_path, adapter=GptOssAdapter, experts_implementation=implementation)
    assert model.hf_model.config._experts_implementation == implementation
    model.set_opt_in("hook_expert_outputs", True)
    tokens = pair.tokens()
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: ".mlp." in n or n.endswith("hook_mlp_out"))
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    close(cache["blocks.1.mlp.hook_expert_outputs"].sum(2), cache["mlp_out", 1])
