"""The TransformerLens surface that legacy notebooks call, checked against the HF model (parameters, modules,
autograd) and algebraic identities: per-component parameters, TransformerLens 4's hook aliases, cache keys,
caching hooks, head labels, accumulated biases, parameter names, weight refactoring, compatibility mode,
``load_and_process_state_dict``, ``sample_datapoint`` and ``default_prepend_bos``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

import bridge
from bridge.analysis.norm_readers import WeightProcessingError
from bridge.analysis.parameter_names import ParameterNameError
from bridge.kernel.components.weight_views import WeightViewError
from bridge.testing.fixtures import build_tiny_model, sensitize, tiny_tokenizer

TOKENS = torch.tensor([[0, 5, 17, 42, 9, 77, 3, 11], [0, 8, 8, 100, 2, 64, 31, 7]])


def gpt2(seed: int = 0) -> bridge.Bridge:
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=4, n_positions=64, vocab_size=128, architectures=["GPT2LMHeadModel"]
    )
    hf = build_tiny_model(config, seed)
    sensitize(hf, seed)
    return bridge.wrap(hf, tiny_tokenizer())


def llama() -> bridge.Bridge:
    config = LlamaConfig(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        vocab_size=128,
        architectures=["LlamaForCausalLM"],
    )
    hf = build_tiny_model(config)
    sensitize(hf)
    return bridge.wrap(hf, tiny_tokenizer())


def hf_logits(model: bridge.Bridge, tokens: torch.Tensor = TOKENS) -> torch.Tensor:
    with torch.no_grad():
        return model.hf_model(tokens).logits


# ------------------------------------------------------------------ per-component parameters


def test_component_parameters_are_the_hf_parameters():
    model = gpt2()
    hf = model.hf_model.transformer
    assert model.embed.W_E is hf.wte.weight
    assert model.pos_embed.W_pos is hf.wpe.weight
    assert model.unembed.W_U.data_ptr() == model.hf_model.lm_head.weight.data_ptr()
    assert model.unembed.W_U.shape == (32, 128)
    assert torch.equal(model.unembed.b_U, torch.zeros(128))  # GPT-2's head has no bias
    assert model.ln_final.w is hf.ln_f.weight and model.ln_final.b is hf.ln_f.bias
    assert model.blocks[1].ln1.w is hf.h[1].ln_1.weight and model.blocks[1].ln2.b is hf.h[1].ln_2.bias
    assert torch.equal(model.blocks[0].mlp.W_in, hf.h[0].mlp.c_fc.weight)  # Conv1D stores [d_in, d_out]
    assert torch.equal(model.blocks[0].mlp.b_out, hf.h[0].mlp.c_proj.bias)


def test_component_parameters_equal_the_model_wide_views():
    model = gpt2()
    assert torch.equal(model.embed.W_E, model.W_E)
    assert torch.equal(model.pos_embed.W_pos, model.W_pos)
    assert torch.equal(model.unembed.W_U, model.W_U) and torch.equal(model.unembed.b_U, model.b_U)
    assert torch.equal(model.blocks[1].mlp.W_out, model.W_out[1])
    tl = model.tl_parameters()
    assert torch.equal(tl["blocks.1.ln2.w"], model.blocks[1].ln2.w) and torch.equal(tl["ln_final.b"], model.ln_final.b)


def test_norm_parameters_reproduce_the_hf_norm():
    """``(x - mean) / sqrt(var + eps) * w + b`` is what the HF LayerNorm computes."""
    model = gpt2()
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    norm = model.blocks[0].ln1
    centred = x - x.mean(-1, keepdim=True)
    expected = centred / (centred.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt() * norm.w + norm.b
    torch.testing.assert_close(norm.hf(x), expected, atol=1e-5, rtol=0)


def test_rms_norm_has_w_and_no_b():
    model = llama()
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    norm = model.blocks[1].ln2
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.w
    torch.testing.assert_close(norm.hf(x), expected, atol=1e-5, rtol=0)
    with pytest.raises(WeightViewError, match=r"RMS norm, which has no bias b.*it has w"):
        _ = model.blocks[1].ln2.b
    assert not hasattr(model.ln_final, "b") and hasattr(model.ln_final, "w")


def test_unembed_is_x_at_W_U_plus_b_U_and_the_hf_head():
    model = gpt2()
    x = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.unembed(x), model.hf_model.lm_head(x), atol=0, rtol=0)
        torch.testing.assert_close(model.unembed(x), x @ model.unembed.W_U + model.unembed.b_U, atol=1e-5, rtol=0)


def test_a_missing_component_parameter_names_what_exists():
    model = gpt2()
    with pytest.raises(AttributeError, match=r"unembed \(Unembed\) has no weight view 'W_Q'.*W_U, b_U.*Linear"):
        _ = model.unembed.W_Q
    with pytest.raises(WeightViewError, match=r"blocks.0.attn.*no weight view 'W_in'.*W_Q, W_K"):
        _ = model.blocks[0].attn.W_in
    with pytest.raises(AttributeError, match=r"blocks.0 .*no attribute 'mixer'.*components: .*attn"):
        _ = model.blocks[0].mixer
    with pytest.raises(AttributeError, match=r"'W_pos'.*W_E"):
        _ = model.embed.W_pos


# ---------------------------------------------------------------------------- hook aliases


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("blocks.1.hook_in", "blocks.1.hook_resid_pre"),
        ("blocks.1.hook_out", "blocks.1.hook_resid_post"),
        ("blocks.0.attn.hook_out", "blocks.0.hook_attn_out"),
        ("blocks.0.mlp.hook_out", "blocks.0.hook_mlp_out"),
        ("blocks.1.attn.q.hook_out", "blocks.1.attn.hook_q"),
        ("blocks.1.attn.v.hook_out", "blocks.1.attn.hook_v"),
        ("blocks.1.attn.o.hook_in", "blocks.1.attn.hook_z"),
        ("embed.hook_out", "hook_embed"),
        ("pos_embed.hook_out", "hook_pos_embed"),
    ],
)
def test_transformer_lens_4_names_are_the_same_hook_points(alias, canonical):
    model = gpt2()

    def double(x, hook):
        return x * 2

    torch.testing.assert_close(
        model.run_with_hooks(TOKENS, fwd_hooks=[(alias, double)]),
        model.run_with_hooks(TOKENS, fwd_hooks=[(canonical, double)]),
        atol=0,
        rtol=0,
    )
    _, cache = model.run_with_cache(TOKENS, names_filter=[alias])
    assert list(cache) == [canonical]  # cache keys stay canonical
    assert cache[alias] is cache[canonical]


def test_get_act_name_in_resolves_in_cache_keys():
    model = gpt2()
    _, cache = model.run_with_cache(TOKENS)
    assert cache["in", 1] is cache["blocks.1.hook_resid_pre"]
    assert cache["out", -1] is cache["blocks.1.hook_resid_post"]


def test_unknown_component_boundary_names_suggest_the_residual_stream():
    model = gpt2()
    with pytest.raises(bridge.HookNameError, match=r"'blocks.0.mlp.hook_in'.*'blocks.0.hook_resid_pre'"):
        model.add_hook("blocks.0.mlp.hook_in", lambda x, hook: None)
    with pytest.raises(bridge.HookNameError, match="hook_resid_post"):
        model.run_with_cache(TOKENS, names_filter=["blocks.1.ln1.hook_out"])


# ------------------------------------------------------------------------------- cache keys


@pytest.mark.parametrize("layer", [np.int64(1), np.int32(-1), torch.tensor(1), torch.tensor([1]), 1])
def test_cache_layers_may_be_numpy_or_tensor_integers(layer):
    model = gpt2()
    _, cache = model.run_with_cache(TOKENS, names_filter=lambda name: name.endswith("hook_pattern"))
    assert cache["attn", layer] is cache["blocks.1.attn.hook_pattern"]


@pytest.mark.parametrize("layer", [torch.tensor(1.0), np.float64(1.0), True, "1"])
def test_cache_layers_must_be_integers(layer):
    _, cache = gpt2().run_with_cache(TOKENS, names_filter="blocks.1.attn.hook_pattern")
    with pytest.raises(bridge.HookNameError, match="must be an integer"):
        cache["attn", layer]


# --------------------------------------------------------------------------- caching hooks


def test_caching_hooks_store_what_run_with_cache_stores():
    model = gpt2()
    _, reference = model.run_with_cache(TOKENS, pos_slice=-1)
    store, fwd, bwd = model.get_caching_hooks(pos_slice=-1)
    assert bwd == [] and not any(point.active for point in model.hook_points())  # nothing attached
    model.run_with_hooks(TOKENS, fwd_hooks=fwd)
    assert set(store) == set(reference)
    for name, value in reference.items():
        torch.testing.assert_close(store[name], value, atol=0, rtol=0)


def test_caching_hook_gradients_are_autograd_gradients():
    model = gpt2()
    store, fwd, bwd = model.get_caching_hooks("blocks.0.hook_resid_post", incl_bwd=True)
    with model.hooks(fwd, bwd):
        model(TOKENS, return_type="loss").backward()
    resid = store["blocks.0.hook_resid_post"].clone().requires_grad_(True)
    loss = model(resid, start_at_layer=1, tokens=TOKENS, return_type="loss")
    (expected,) = torch.autograd.grad(loss, resid)
    torch.testing.assert_close(store["blocks.0.hook_resid_post_grad"], expected, atol=1e-6, rtol=0)


def test_cache_all_caches_every_forward_until_reset():
    model = gpt2()
    cache: dict[str, torch.Tensor] = {}
    model.cache_all(cache, remove_batch_dim=True)
    model(TOKENS[:1])
    assert cache["blocks.1.hook_resid_post"].shape == (8, 32)  # a batch of one loses its batch dimension
    some: dict[str, torch.Tensor] = {}
    model.cache_some(some, lambda name: name.endswith("hook_pattern"))
    model(TOKENS)
    assert cache["blocks.1.hook_resid_post"].shape == (2, 8, 32)  # a larger batch keeps it
    assert set(some) == {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"}
    model.reset_hooks()
    assert not any(point.active for point in model.hook_points())


# ------------------------------------------------------------------- labels, biases, names


def test_all_head_labels_is_a_list_and_a_method():
    model = gpt2()
    expected = [f"L{layer}H{head}" for layer in range(2) for head in range(4)]
    assert model.all_head_labels == expected and model.all_head_labels() == expected


def test_accumulated_bias_sums_the_hf_output_biases():
    model = gpt2()
    h = model.hf_model.transformer.h
    attn, mlp = [b.attn.c_proj.bias for b in h], [b.mlp.c_proj.bias for b in h]
    torch.testing.assert_close(model.accumulated_bias(0), torch.zeros(32), atol=0, rtol=0)
    torch.testing.assert_close(model.accumulated_bias(2), attn[0] + mlp[0] + attn[1] + mlp[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(model.accumulated_bias(1, mlp_input=True), attn[0] + mlp[0] + attn[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(
        model.accumulated_bias(2, include_mlp_biases=False), attn[0] + attn[1], atol=1e-6, rtol=0
    )
    with pytest.raises(bridge.BridgeError, match="layer must be in"):
        model.accumulated_bias(2, mlp_input=True)


def test_state_dict_keeps_hf_names_and_points_to_the_transformer_lens_ones():
    model = gpt2()
    state = model.state_dict()
    assert state["hf_model.lm_head.weight"] is not None
    with pytest.raises(ParameterNameError, match=r"tl_parameters\(\)\['blocks.0.attn.W_Q'\].*model.blocks\[0\]"):
        state["blocks.0.attn.W_Q"]
    with pytest.raises(KeyError, match=r"Did you mean 'hf_model.lm_head.weight'"):
        state["hf_model.lm_head.weigth"]
    other = gpt2(seed=3)
    other.load_state_dict(state)
    torch.testing.assert_close(hf_logits(other), hf_logits(model), atol=0, rtol=0)


# -------------------------------------------------------------------------- processing


def _qk_with_biases(model: bridge.Bridge, layer: int) -> torch.Tensor:
    """``[W_Q; b_Q] [W_K; b_K]ᵀ`` per head: ``[n_heads, d_model + 1, d_model + 1]``."""
    attn = model.blocks[layer].attn
    q = torch.cat([attn.W_Q, attn.b_Q[:, None]], dim=1)
    k = torch.cat([attn.W_K, attn.b_K[:, None]], dim=1)
    return q @ k.transpose(-2, -1)


def test_refactor_factored_attn_matrices_keeps_the_logits_and_the_circuits():
    model = gpt2()
    before = hf_logits(model)
    qk = _qk_with_biases(model, 1).detach().clone()
    ov = model.OV[1].AB.detach().clone()
    b_o = model.b_O[1] + torch.einsum("hd,hdm->m", model.b_V[1], model.W_O[1])
    model.process_weights(False, False, False, False, refactor_factored_attn_matrices=True)
    torch.testing.assert_close(hf_logits(model), before, atol=1e-4, rtol=0)
    torch.testing.assert_close(_qk_with_biases(model, 1), qk, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.OV[1].AB, ov, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.b_O[1], b_o, atol=1e-5, rtol=0)
    assert torch.equal(model.b_V, torch.zeros_like(model.b_V))
    w_o = model.W_O[1]  # [h, d_head, d_model]: a rotation, rows orthonormal
    torch.testing.assert_close(w_o @ w_o.transpose(-2, -1), torch.eye(8).expand(4, 8, 8), atol=1e-5, rtol=0)
    attn = model.blocks[1].attn  # even: [W_Q; b_Q] and [W_K; b_K] have the same column norms (√S each)
    q_norms = torch.cat([attn.W_Q, attn.b_Q[:, None]], dim=1).norm(dim=1)
    k_norms = torch.cat([attn.W_K, attn.b_K[:, None]], dim=1).norm(dim=1)
    torch.testing.assert_close(q_norms, k_norms, atol=1e-4, rtol=0)


def test_refactor_is_refused_with_rotary_positions_and_nothing_changes():
    model = llama()
    before = {name: p.detach().clone() for name, p in model.hf_model.named_parameters()}
    with pytest.raises(WeightProcessingError, match="rotary positions"):
        model.process_weights(refactor_factored_attn_matrices=True)
    with pytest.raises(WeightProcessingError, match="rotary"):
        model.enable_compatibility_mode(refactor_factored_attn_matrices=True)
    assert all(torch.equal(p, before[name]) for name, p in model.hf_model.named_parameters())


def test_load_takes_the_processing_and_bos_flags(tmp_path):
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=4, n_positions=64, vocab_size=128, architectures=["GPT2LMHeadModel"]
    )
    bridge.testing.save_tiny_model(config, tmp_path)
    model = bridge.load(tmp_path, refactor_factored_attn_matrices=True, default_prepend_bos=False)
    assert model.cfg.extra["weight_processing"] == ["refactor_factored_attn_matrices"]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf_logits(model), hf(TOKENS).logits, atol=1e-4, rtol=0)
    assert model.cfg.default_prepend_bos is False
    text_ids = model.tokenizer("a b", add_special_tokens=False)["input_ids"]
    assert model.to_tokens("a b")[0].tolist() == text_ids
    assert bridge.load(tmp_path).to_tokens("a b")[0].tolist() == [model.tokenizer.bos_token_id, *text_ids]


def test_enable_compatibility_mode_is_process_weights_with_the_defaults():
    model, reference = gpt2(), gpt2()
    before = torch.log_softmax(hf_logits(model), -1)
    model.enable_compatibility_mode(disable_warnings=True)
    reference.process_weights(fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True)
    for (name, mine), (_, theirs) in zip(
        model.hf_model.named_parameters(), reference.hf_model.named_parameters(), strict=True
    ):
        torch.testing.assert_close(mine, theirs, atol=0, rtol=0, msg=name)
    assert model.compatibility_mode
    torch.testing.assert_close(torch.log_softmax(hf_logits(model), -1), before, atol=1e-4, rtol=0)
    processed = {name: p.detach().clone() for name, p in model.hf_model.named_parameters()}
    model.enable_compatibility_mode()  # steps already done are not repeated
    assert all(torch.equal(p, processed[name]) for name, p in model.hf_model.named_parameters())


def test_enable_compatibility_mode_does_only_what_applies_and_no_processing_nothing():
    model = llama()
    untouched = llama()
    untouched.enable_compatibility_mode(no_processing=True)
    assert untouched.compatibility_mode and "weight_processing" not in untouched.cfg.extra
    model.enable_compatibility_mode()  # RMS norms: no centring of the writing weights
    assert model.cfg.extra["weight_processing"] == ["fold_ln", "center_unembed", "fold_value_biases"]


def test_load_and_process_state_dict_loads_hf_names_and_refuses_transformer_lens_ones():
    model, source = gpt2(), gpt2(seed=5)
    expected = torch.log_softmax(hf_logits(source), -1)
    model.load_and_process_state_dict(source.state_dict())
    assert model.cfg.extra["weight_processing"] == [
        "fold_ln",
        "center_writing_weights",
        "center_unembed",
        "fold_value_biases",
    ]
    torch.testing.assert_close(torch.log_softmax(hf_logits(model), -1), expected, atol=1e-4, rtol=0)
    with pytest.raises(bridge.BridgeError, match=r"TransformerLens parameter names.*bridge.load"):
        model.load_and_process_state_dict(dict(source.tl_named_parameters()))


def test_sample_datapoint_draws_as_hooked_transformer_does():
    model = gpt2()
    with pytest.raises(bridge.BridgeError, match=r"model.dataset"):
        model.sample_datapoint()
    texts = [f"text {i}" for i in range(50)]
    model.dataset = [{"text": text} for text in texts]
    np.random.seed(7)
    expected = texts[np.random.randint(0, 50)]
    np.random.seed(7)
    assert model.sample_datapoint() == expected
    model.dataset = texts
    np.random.seed(7)
    torch.testing.assert_close(model.sample_datapoint(tokenize=True), model.to_tokens(expected), atol=0, rtol=0)


def test_circuitsvis_renders_a_bridge_cache_and_the_demo_writes_html(tmp_path):
    cv = pytest.importorskip("circuitsvis")
    model = gpt2()
    _, cache = model.run_with_cache(TOKENS[:1])
    pattern = cache["pattern", 0, "attn"][0]  # [head, q_pos, k_pos]
    rendered = cv.attention.attention_heads(tokens=[f"t{i}" for i in range(8)], attention=pattern)
    assert f"{float(pattern[1, 3, 2]):.4f}"[:5] in rendered.local_src  # the cached pattern's values are in the page
    from bridge.app.demo import _write_attention_html

    path = _write_attention_html(model, TOKENS[:1], 1, tmp_path / "attention.html", lambda _line: None)
    assert path is not None and "AttentionHeads" in (tmp_path / "attention.html").read_text()
