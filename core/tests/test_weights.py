"""Weight views against the HF model's own activations and parameters.

The references are the HF modules' outputs (captured with plain torch hooks) and the HF parameters;
the views are checked by recombining them with hook activations the way TransformerLens defines them.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, LlamaConfig

import bridge
from bridge.kernel.components.weight_views import WeightViewError, split_fused
from bridge.testing.fixtures import build_tiny_model, tiny_tokenizer

TOKENS = torch.tensor([[0, 5, 17, 42, 9, 77, 3, 11], [0, 8, 8, 100, 2, 64, 31, 7]])


def _perturbed(hf_model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random biases and norm weights (HF initialises them to 0 and 1, which would hide misplaced ones)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in hf_model.parameters():
            if param.ndim == 1:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return hf_model


def gpt2(**overrides) -> bridge.Bridge:
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=4, n_positions=64, vocab_size=128, architectures=["GPT2LMHeadModel"]
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return bridge.wrap(_perturbed(build_tiny_model(config)), tiny_tokenizer())


def llama(**overrides) -> bridge.Bridge:
    values = dict(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        vocab_size=128,
        architectures=["LlamaForCausalLM"],
    )
    return bridge.wrap(_perturbed(build_tiny_model(LlamaConfig(**values, **overrides))), tiny_tokenizer())


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request) -> bridge.Bridge:
    return gpt2() if request.param == "gpt2" else llama(attention_bias=True, mlp_bias=True)


def _outputs_of(modules: dict[str, torch.nn.Module], run) -> dict[str, torch.Tensor]:
    """Run ``run()`` and return each HF module's output (first element of tuples)."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(
            lambda _m, _a, out, key=key: seen.__setitem__(key, out[0] if isinstance(out, tuple) else out)
        )
        for key, module in modules.items()
    ]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_heads_times_W_O_plus_b_O_is_the_attention_output(model):
    """``Σ_h z[:, :, h] @ W_O[h] + b_O`` equals the HF attention module's output (TL's ``result = z @ W_O``)."""
    attn_modules = {f"attn{i}": block.attn.hf for i, block in enumerate(model.blocks)}
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS, names_filter=lambda n: n.endswith("hook_z"))
        outputs = _outputs_of(attn_modules, lambda: model(TOKENS))
    for i in range(model.cfg.n_layers):
        z = cache[f"blocks.{i}.attn.hook_z"]  # [b, p, h, d_head]
        per_head = torch.einsum("bphd,hdm->bphm", z, model.blocks[i].attn.W_O)
        torch.testing.assert_close(
            per_head.sum(2) + model.blocks[i].attn.b_O, outputs[f"attn{i}"], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(model.W_O[i], model.blocks[i].attn.W_O)
        torch.testing.assert_close(model.b_O[i], model.blocks[i].attn.b_O)


def test_post_times_W_out_plus_b_out_is_the_mlp_output(model):
    mlp_modules = {f"mlp{i}": block.mlp.hf for i, block in enumerate(model.blocks)}
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS, names_filter=lambda n: "mlp.hook_" in n)
        outputs = _outputs_of(mlp_modules, lambda: model(TOKENS))
    for i in range(model.cfg.n_layers):
        post = cache[f"blocks.{i}.mlp.hook_post"]  # [b, p, d_mlp]
        expected = outputs[f"mlp{i}"]
        torch.testing.assert_close(post @ model.W_out[i] + model.b_out[i], expected, atol=1e-5, rtol=1e-5)


def test_views_share_storage_and_gradients_reach_the_hf_parameters():
    model = gpt2()
    attn = model.blocks[1].attn
    c_proj = attn.hf.c_proj
    assert attn.W_O.untyped_storage().data_ptr() == c_proj.weight.untyped_storage().data_ptr()
    (attn.W_O.square().sum() + model.W_out.sum()).backward()
    torch.testing.assert_close(c_proj.weight.grad, 2 * c_proj.weight.detach())
    torch.testing.assert_close(
        model.blocks[0].mlp.hf.c_proj.weight.grad, torch.ones_like(model.blocks[0].mlp.hf.c_proj.weight)
    )


def test_gradients_reach_the_raw_kv_heads_through_the_expanded_views():
    model = llama()
    attn = model.blocks[0].attn
    attn.W_K.sum().backward()  # each raw kv head is read by n_heads / n_kv_heads = 2 query heads
    torch.testing.assert_close(attn.hf.k_proj.weight.grad, torch.full_like(attn.hf.k_proj.weight, 2.0))


def test_missing_biases_are_zeros():
    model = llama()  # Llama: no biases anywhere by default
    for name, shape in [
        ("b_Q", (2, 4, 8)),
        ("b_K", (2, 4, 8)),
        ("b_V", (2, 4, 8)),
        ("b_O", (2, 32)),
        ("b_in", (2, 48)),
        ("b_out", (2, 32)),
    ]:
        value = getattr(model, name)
        assert value.shape == shape and not value.any(), name


def test_a_logit_scale_is_in_W_U_and_b_U():
    """A model that multiplies its LM head's output by a logit scale (Cohere; here a torch hook on GPT-2's head)
    declares it in ``cfg.extra["logit_scale"]``: ``W_U``/``b_U`` include it, so ``ln_final(resid) @ W_U + b_U``
    is the logits; without one ``W_U`` is the head's parameter itself."""
    model = gpt2()
    head = model.hf_model.lm_head
    assert model.W_U.data_ptr() == head.weight.data_ptr()
    head.bias = torch.nn.Parameter(0.1 * torch.randn(head.out_features, generator=torch.Generator().manual_seed(2)))
    head.register_forward_hook(lambda _module, _inputs, out: out * 0.25)
    model.cfg.extra["logit_scale"] = 0.25
    torch.testing.assert_close(model.W_U, head.weight.T * 0.25, rtol=0, atol=0)
    torch.testing.assert_close(model.b_U, head.bias * 0.25, rtol=0, atol=0)
    logits, cache = model.run_with_cache(TOKENS, names_filter="ln_final.hook_normalized")
    ln_f = model.hf_model.transformer.ln_f
    unembedded = (cache["ln_final.hook_normalized"] * ln_f.weight + ln_f.bias) @ model.W_U + model.b_U
    torch.testing.assert_close(unembedded, logits, rtol=0, atol=1e-5)


def test_missing_views_raise_an_attribute_error_saying_what_exists():
    model = llama()
    assert not hasattr(model, "W_pos")
    with pytest.raises(WeightViewError, match="no learned position embedding"):
        _ = model.W_pos
    assert model.W_gate.shape == (2, 32, 48)
    plain = gpt2()
    assert plain.W_gate is None  # as TransformerLens: no gated MLP anywhere
    with pytest.raises(AttributeError, match=r"blocks\.0\.mlp is not a gated MLP.*W_in"):
        _ = plain.blocks[0].mlp.W_gate
    assert isinstance(WeightViewError("x"), bridge.BridgeError)


def test_split_fused_layouts_are_the_inverse_of_concatenation():
    h, kv, d = 4, 2, 3
    q, k, v = torch.randn(5, h, d), torch.randn(5, kv, d), torch.randn(5, kv, d)
    grouped = torch.cat([q.flatten(1), k.flatten(1), v.flatten(1)], dim=1)
    for got, want in zip(split_fused(grouped, "grouped", h, kv, d), (q, k, v), strict=True):
        torch.testing.assert_close(got, want)
    q_mha, k_mha, v_mha = torch.randn(5, h, d), torch.randn(5, h, d), torch.randn(5, h, d)
    per_head = torch.stack([q_mha, k_mha, v_mha], dim=2).flatten(1)  # per head [q | k | v]
    for got, want in zip(split_fused(per_head, "per_head", h, h, d), (q_mha, k_mha, v_mha), strict=True):
        torch.testing.assert_close(got, want)
    g = h // kv
    kv_groups = torch.cat([q.reshape(5, kv, g, d), k[:, :, None], v[:, :, None]], dim=2).flatten(1)
    for got, want in zip(split_fused(kv_groups, "kv_groups", h, kv, d), (q, k, v), strict=True):
        torch.testing.assert_close(got, want)


def _gpt2_heads_from_hf(model: bridge.Bridge, layer: int) -> dict[str, torch.Tensor]:
    """Per-head W_Q, W_K, W_V ``[h, m, d]`` and W_O ``[h, d, m]`` sliced by hand from GPT-2's Conv1D weights."""
    m, h, d = model.cfg.d_model, model.cfg.n_heads, model.cfg.d_head
    c_attn = model.hf_model.transformer.h[layer].attn.c_attn.weight.detach()  # [m, 3m]: [q | k | v]
    c_proj = model.hf_model.transformer.h[layer].attn.c_proj.weight.detach()  # [m, m]
    out = {}
    for name, start in (("W_Q", 0), ("W_K", m), ("W_V", 2 * m)):
        out[name] = torch.stack([c_attn[:, start + i * d : start + (i + 1) * d] for i in range(h)])
    out["W_O"] = torch.stack([c_proj[i * d : (i + 1) * d] for i in range(h)])
    return out


def test_qkv_views_are_the_hf_columns_and_OV_QK_their_products():
    model = gpt2()
    for layer in range(model.cfg.n_layers):
        ref = _gpt2_heads_from_hf(model, layer)
        attn = model.blocks[layer].attn
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            torch.testing.assert_close(getattr(attn, name), ref[name], atol=0, rtol=0)
        ov, qk = ref["W_V"] @ ref["W_O"], ref["W_Q"] @ ref["W_K"].transpose(-2, -1)
        torch.testing.assert_close(attn.OV.AB, ov, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(model.OV[layer].AB, ov, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(model.QK[layer, 2].AB, qk[2], atol=1e-6, rtol=1e-5)
    assert model.OV.shape == (2, 4, 32, 32) and model.QK.mdim == 8


@pytest.mark.parametrize("mode", ["Q", "K", "V"])
def test_all_composition_scores_are_the_dense_formula_on_later_layers(mode):
    model = gpt2(n_layer=3)
    heads = [_gpt2_heads_from_hf(model, layer) for layer in range(3)]
    with torch.no_grad():
        scores = model.all_composition_scores(mode)
    assert scores.shape == (3, 4, 3, 4)
    fro = torch.linalg.matrix_norm
    for l1 in range(3):
        for l2 in range(3):
            for h1 in range(4):
                for h2 in range(4):
                    ov = heads[l1]["W_V"][h1] @ heads[l1]["W_O"][h1]
                    qk = heads[l2]["W_Q"][h2] @ heads[l2]["W_K"][h2].T
                    right = {"Q": qk, "K": qk.T, "V": heads[l2]["W_V"][h2] @ heads[l2]["W_O"][h2]}[mode]
                    want = fro(ov @ right) / (fro(ov) * fro(right)) if l1 < l2 else torch.tensor(0.0)
                    torch.testing.assert_close(scores[l1, h1, l2, h2], want, atol=1e-5, rtol=1e-4)


def test_all_composition_scores_rejects_an_unknown_mode():
    with pytest.raises(bridge.BridgeError, match="'Q', 'K' or 'V'"):
        gpt2().all_composition_scores("O")


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_z_times_W_O_is_the_attention_output_for_any_batch_and_length(model, batch, length, seed):
    tokens = torch.randint(0, 128, (batch, length), generator=torch.Generator().manual_seed(seed))
    attn_modules = {f"attn{i}": block.attn.hf for i, block in enumerate(model.blocks)}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
        outputs = _outputs_of(attn_modules, lambda: model(tokens))
    for i in range(model.cfg.n_layers):
        got = torch.einsum("bphd,lhdm->bpm", cache["z", i], model.W_O[i : i + 1]) + model.b_O[i]
        torch.testing.assert_close(got, outputs[f"attn{i}"], atol=1e-5, rtol=1e-5)


def test_linear_views_are_views_and_W_E_pos_stacks_the_embeddings():
    model = llama(attention_bias=True)
    attn = model.blocks[0].attn
    assert attn.W_Q.untyped_storage().data_ptr() == attn.hf.q_proj.weight.untyped_storage().data_ptr()
    assert attn._W_K.untyped_storage().data_ptr() == attn.hf.k_proj.weight.untyped_storage().data_ptr()
    assert attn._b_V.untyped_storage().data_ptr() == attn.hf.v_proj.bias.untyped_storage().data_ptr()
    plain = gpt2()
    assert plain.W_E_pos.shape == (128 + 64, 32)
    torch.testing.assert_close(plain.W_E_pos[128:], plain.hf_model.transformer.wpe.weight)


def test_tl_parameters_name_the_hf_weights_as_transformerlens_does():
    model = gpt2()
    hf = model.hf_model.transformer
    params = model.tl_parameters()
    d = 8  # d_head: n_embd 32 over 4 heads
    c_attn = hf.h[1].attn.c_attn.weight  # Conv1D [d_model, 3 d_model] = [q | k | v]
    torch.testing.assert_close(params["blocks.1.attn.W_V"][2], c_attn[:, 64 + 2 * d : 64 + 3 * d], rtol=0, atol=0)
    torch.testing.assert_close(
        params["blocks.0.attn.W_O"][3], hf.h[0].attn.c_proj.weight[3 * d : 4 * d], rtol=0, atol=0
    )
    torch.testing.assert_close(params["blocks.1.mlp.W_in"], hf.h[1].mlp.c_fc.weight, rtol=0, atol=0)
    torch.testing.assert_close(params["blocks.0.ln2.w"], hf.h[0].ln_2.weight, rtol=0, atol=0)
    torch.testing.assert_close(params["ln_final.b"], hf.ln_f.bias, rtol=0, atol=0)
    torch.testing.assert_close(params["unembed.W_U"], model.hf_model.lm_head.weight.T, rtol=0, atol=0)
    torch.testing.assert_close(params["pos_embed.W_pos"], hf.wpe.weight, rtol=0, atol=0)
    assert "blocks.0.mlp.W_gate" not in params  # GPT-2's MLP is not gated
    assert dict(model.tl_named_parameters()).keys() == params.keys()


def test_tl_parameters_give_a_norms_effective_scale():
    """A norm that scales by ``1 + w`` (``weight_offset=1``: Nemotron's ``LayerNorm1P``, Gemma's RMS norm) has
    ``ln.w = 1 + w`` in ``tl_parameters``."""
    from public_api_adapters import NemotronExamples

    model = bridge.wrap(_perturbed(build_tiny_model(NemotronExamples.example_config())), tiny_tokenizer())
    params = model.tl_parameters()
    layer = model.hf_model.model.layers[0]
    torch.testing.assert_close(params["blocks.0.ln1.w"], 1.0 + layer.input_layernorm.weight, rtol=0, atol=0)
    assert "pos_embed.W_pos" not in params and "blocks.0.mlp.W_in" in params and "blocks.0.mlp.W_gate" not in params


def test_W_pos_starts_at_the_offset_a_position_table_is_read_at():
    """A position table read at ``position + offset`` (OPT's and XGLM's offset of 2) gives ``W_pos[p]`` for
    position ``p``: the rows from ``offset`` on, still a view of the HF parameter."""
    model = gpt2()
    wpe = model.hf_model.transformer.wpe
    assert model.W_pos.shape == (64, 32) and model.W_pos.data_ptr() == wpe.weight.data_ptr()
    wpe.offset = 2
    assert model.W_pos.shape == (62, 32)
    assert model.W_pos.data_ptr() == wpe.weight[2].data_ptr()
    wpe.offset = 0
    assert model.W_pos is wpe.weight
