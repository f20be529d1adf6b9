"""Opt-in sublayer-input hook points: ``hook_mlp_in``, ``hook_attn_in``, ``hook_q_input``/``k``/``v``.

References: an independently loaded HF model with plain torch hooks (a pre-hook on its ``ln_1``/``ln_2``,
a forward hook on its q/k/v projection recomputing one head's columns by hand from the weights)."""

import pytest
import torch
from public_api_adapters import GPT2Examples, LlamaExamples

from bridge.kernel.errors import OptInHookError
from bridge.testing import make_pair

ATOL = 1e-5


@pytest.fixture(scope="module")
def gpt2_pair():
    return make_pair(GPT2Examples)


@pytest.fixture(scope="module")
def llama_pair():
    return make_pair(LlamaExamples)


@pytest.fixture(autouse=True)
def _reset(request):
    yield
    for name in ("gpt2_pair", "llama_pair"):
        if name in request.fixturenames:
            model = request.getfixturevalue(name).bridge
            model.reset_hooks(including_permanent=True)
            for switch in (model.set_use_split_qkv_input, model.set_use_attn_in, model.set_use_hook_mlp_in):
                switch(False)


def delta_for(d_model, seed=1):
    return torch.randn(d_model, generator=torch.Generator().manual_seed(seed))


def add_at_head(delta, head):
    def hook(tensor, hook):
        tensor[:, :, head] += delta  # in place: the hook gets a tensor it may edit

    return hook


def reference_logits(reference, tokens, pre_hooks=(), fwd_hooks=()):
    handles = [module.register_forward_pre_hook(fn) for module, fn in pre_hooks]
    handles += [module.register_forward_hook(fn) for module, fn in fwd_hooks]
    try:
        return reference(tokens).logits
    finally:
        for handle in handles:
            handle.remove()


def test_opt_in_until_enabled(gpt2_pair):
    model = gpt2_pair.bridge
    for name in ("blocks.0.hook_mlp_in", "blocks.0.hook_attn_in", "blocks.0.hook_q_input"):
        with pytest.raises(OptInHookError):
            model.add_hook(name, lambda t, hook: None)
    _, cache = model.run_with_cache(gpt2_pair.tokens())
    assert not any(n.endswith(("mlp_in", "attn_in", "_input")) for n in cache)


def test_shapes(gpt2_pair, llama_pair):
    for pair in (gpt2_pair, llama_pair):
        model, cfg = pair.bridge, pair.bridge.cfg
        model.set_use_split_qkv_input(True)
        model.set_use_attn_in(True)
        model.set_use_hook_mlp_in(True)
        _, cache = model.run_with_cache(pair.tokens(2, 7))
        assert cache["blocks.1.hook_mlp_in"].shape == (2, 7, cfg.d_model)
        assert cache["blocks.1.hook_attn_in"].shape == (2, 7, cfg.n_heads, cfg.d_model)
        assert cache["blocks.1.hook_q_input"].shape == (2, 7, cfg.n_heads, cfg.d_model)
        assert cache["blocks.1.hook_k_input"].shape == (2, 7, cfg.n_key_value_heads, cfg.d_model)
        assert cache["blocks.1.hook_v_input"].shape == (2, 7, cfg.n_key_value_heads, cfg.d_model)
        torch.testing.assert_close(cache["blocks.1.hook_mlp_in"], cache["blocks.1.hook_resid_mid"])
        for head in range(cfg.n_heads):
            torch.testing.assert_close(cache["blocks.1.hook_attn_in"][:, :, head], cache["blocks.1.hook_resid_pre"])


def test_mlp_in_patch_equals_a_pre_hook_on_hf_ln2_and_leaves_the_residual(gpt2_pair):
    model, reference, tokens = gpt2_pair.bridge, gpt2_pair.reference, gpt2_pair.tokens()
    delta = delta_for(model.cfg.d_model)
    model.set_use_hook_mlp_in(True)
    _, clean = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0."))
    names = ["blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]
    with model.hooks(fwd_hooks=[("blocks.0.hook_mlp_in", lambda t, hook: t + delta)]):
        logits, cache = model.run_with_cache(tokens, names_filter=names)
    expected = reference_logits(
        reference, tokens, pre_hooks=[(reference.transformer.h[0].ln_2, lambda m, a: a[0] + delta)]
    )
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(cache["blocks.0.hook_resid_mid"], clean["blocks.0.hook_resid_mid"])
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_post"],
        clean["blocks.0.hook_resid_mid"] + cache["blocks.0.hook_mlp_out"],
        atol=1e-6,
        rtol=0,
    )


def test_attn_in_patch_on_every_head_equals_a_pre_hook_on_hf_ln1(gpt2_pair):
    model, reference, tokens = gpt2_pair.bridge, gpt2_pair.reference, gpt2_pair.tokens()
    delta = delta_for(model.cfg.d_model)
    model.set_use_attn_in(True)
    with model.hooks(fwd_hooks=[("blocks.1.hook_attn_in", lambda t, hook: t + delta)]):
        logits = model(tokens)
    expected = reference_logits(
        reference, tokens, pre_hooks=[(reference.transformer.h[1].ln_1, lambda m, a: a[0] + delta)]
    )
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["blocks.0.hook_q_input", "blocks.0.attn.hook_q_input"])  # TL 3 and TL 4 spelling
def test_q_input_head_patch_equals_q_computed_by_hand(gpt2_pair, name):
    """Head 2's query from ``ln_1(x + δ)`` and the columns of ``c_attn`` that hold it; nothing else moves."""
    model, reference, tokens = gpt2_pair.bridge, gpt2_pair.reference, gpt2_pair.tokens()
    cfg, head = model.cfg, 2
    delta = delta_for(cfg.d_model)
    block = reference.transformer.h[0]
    columns = slice(head * cfg.d_head, (head + 1) * cfg.d_head)
    seen = {}

    def capture(_module, args):
        seen["x"] = args[0]

    def replace_q(_module, _args, out):
        q = block.ln_1(seen["x"] + delta) @ block.attn.c_attn.weight[:, columns] + block.attn.c_attn.bias[columns]
        out = out.clone()
        out[..., columns] = q
        seen["q"] = q
        return out

    expected = reference_logits(
        reference, tokens, pre_hooks=[(block.ln_1, capture)], fwd_hooks=[(block.attn.c_attn, replace_q)]
    )
    model.set_use_split_qkv_input(True)
    _, clean = model.run_with_cache(tokens, names_filter=["blocks.0.attn.hook_q", "blocks.0.attn.hook_k"])
    with model.hooks(fwd_hooks=[(name, add_at_head(delta, head))]):
        logits, cache = model.run_with_cache(tokens, names_filter=["blocks.0.attn.hook_q", "blocks.0.attn.hook_k"])
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)
    q = cache["blocks.0.attn.hook_q"]
    torch.testing.assert_close(q[:, :, head], seen["q"].view(q[:, :, head].shape), atol=ATOL, rtol=0)
    others = [h for h in range(cfg.n_heads) if h != head]
    torch.testing.assert_close(q[:, :, others], clean["blocks.0.attn.hook_q"][:, :, others], atol=ATOL, rtol=0)
    torch.testing.assert_close(cache["blocks.0.attn.hook_k"], clean["blocks.0.attn.hook_k"], atol=ATOL, rtol=0)


def test_k_input_patch_on_a_grouped_query_model_equals_k_computed_by_hand(llama_pair):
    model, reference, tokens = llama_pair.bridge, llama_pair.reference, llama_pair.tokens()
    cfg, kv_head = model.cfg, 1
    delta = delta_for(cfg.d_model, seed=2)
    layer = reference.model.layers[0]
    rows = slice(kv_head * cfg.d_head, (kv_head + 1) * cfg.d_head)
    seen = {}

    def capture(_module, args):
        seen["x"] = args[0]

    def replace_k(module, _args, out):
        k = torch.nn.functional.linear(layer.input_layernorm(seen["x"] + delta), module.weight[rows])
        out = out.clone()
        out[..., rows] = k
        seen["k"] = k
        return out

    expected = reference_logits(
        reference, tokens, pre_hooks=[(layer.input_layernorm, capture)], fwd_hooks=[(layer.self_attn.k_proj, replace_k)]
    )
    model.set_use_split_qkv_input(True)
    names = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v"]
    _, clean = model.run_with_cache(tokens, names_filter=names)
    with model.hooks(fwd_hooks=[("blocks.0.hook_k_input", add_at_head(delta, kv_head))]):
        logits, cache = model.run_with_cache(tokens, names_filter=names)
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)
    k = cache["blocks.0.attn.hook_k"]
    torch.testing.assert_close(k[:, :, kv_head], seen["k"].view(k[:, :, kv_head].shape), atol=ATOL, rtol=0)
    torch.testing.assert_close(k[:, :, 0], clean["blocks.0.attn.hook_k"][:, :, 0], atol=ATOL, rtol=0)
    for name in ("blocks.0.attn.hook_q", "blocks.0.attn.hook_v"):
        torch.testing.assert_close(cache[name], clean[name], atol=ATOL, rtol=0)


def test_attn_in_on_a_grouped_query_model_feeds_kv_from_the_first_head_of_each_group(llama_pair):
    model, tokens = llama_pair.bridge, llama_pair.tokens()
    cfg = model.cfg
    group = cfg.n_heads // cfg.n_key_value_heads
    delta = delta_for(cfg.d_model, seed=3)
    model.set_use_attn_in(True)
    names = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k"]
    _, clean = model.run_with_cache(tokens, names_filter=names)
    for head, moved_kv in ((1, None), (group, 1)):
        with model.hooks(fwd_hooks=[("blocks.0.hook_attn_in", add_at_head(delta, head))]):
            _, cache = model.run_with_cache(tokens, names_filter=names)
        q_moved = (cache["blocks.0.attn.hook_q"] - clean["blocks.0.attn.hook_q"]).abs().amax(dim=(0, 1, 3))
        k_moved = (cache["blocks.0.attn.hook_k"] - clean["blocks.0.attn.hook_k"]).abs().amax(dim=(0, 1, 3))
        assert (q_moved > 1e-4).tolist() == [h == head for h in range(cfg.n_heads)]
        assert (k_moved > 1e-4).tolist() == [j == moved_kv for j in range(cfg.n_key_value_heads)]


def test_input_hooks_leave_nothing_behind(llama_pair):
    model, tokens = llama_pair.bridge, llama_pair.tokens()
    model.set_use_split_qkv_input(True)
    model.set_use_attn_in(True)
    model.set_use_hook_mlp_in(True)
    names = lambda n: n.endswith(("_input", "attn_in", "mlp_in"))  # noqa: E731
    model.run_with_cache(tokens, names_filter=names)
    assert all(block.head_inputs.pending is None for block in model.blocks)
    altered = [
        name
        for name, module in model.hf_model.named_modules()
        if "forward" in module.__dict__ or module._forward_hooks or module._forward_pre_hooks
    ]
    assert altered == []
