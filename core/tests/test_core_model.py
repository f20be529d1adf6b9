"""The Bridge API on a tiny GPT-2: hooks lifecycle, forward options, tokens, cache keys."""

import pytest
import torch
import transformers

import bridge
from bridge import ActivationCache, BridgeError, HookNameError, act_name
from bridge.testing import examples_of


def test_short_keys_resolve_like_transformerlens(gpt2):
    _, cache = gpt2.run_with_cache("Hello world")
    assert isinstance(cache, ActivationCache)
    assert cache["pattern", 0] is cache["blocks.0.attn.hook_pattern"]
    assert cache["resid_post", -1] is cache["blocks.1.hook_resid_post"]
    assert cache["scale", 1, "ln2"] is cache["blocks.1.ln2.hook_scale"]
    assert cache["embed"] is cache["hook_embed"]
    assert cache["normalized"] is cache["ln_final.hook_normalized"]
    assert act_name("q", 3) == "blocks.3.attn.hook_q"
    assert act_name("pre", 2) == "blocks.2.mlp.hook_pre"
    with pytest.raises(HookNameError, match="hook_pattern"):
        cache["blocks.0.attn.hook_patern"]


def test_names_filter_forms(gpt2):
    tokens = torch.tensor([[0, 5, 6, 7]])
    _, one = gpt2.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    _, listed = gpt2.run_with_cache(tokens, names_filter=["hook_embed", "blocks.1.attn.hook_z"])
    _, pred = gpt2.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert list(one) == ["blocks.0.hook_resid_post"]
    assert set(listed) == {"hook_embed", "blocks.1.attn.hook_z"}
    assert set(pred) == {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"}
    with pytest.raises(HookNameError, match=r"blocks\.1\.attn\.hook_z"):
        gpt2.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_zz"])


def test_remove_batch_dim_and_to(gpt2):
    _, cache = gpt2.run_with_cache(torch.tensor([[0, 5, 6]]), remove_batch_dim=True)
    assert cache["resid_pre", 0].shape == (3, gpt2.cfg.d_model)
    assert cache.to("cpu") is cache
    _, batched = gpt2.run_with_cache(torch.tensor([[0, 5], [0, 6]]))
    with pytest.raises(BridgeError, match="batch of size 1"):
        batched.remove_batch_dim()


def test_loss_matches_hf_and_per_token(gpt2):
    tokens = torch.tensor([[0, 5, 6, 7, 8]])
    expected = gpt2.hf_model(tokens, labels=tokens).loss
    torch.testing.assert_close(gpt2(tokens, return_type="loss"), expected, atol=1e-5, rtol=0)
    per_token = gpt2(tokens, return_type="loss", loss_per_token=True)
    assert per_token.shape == (1, 4)
    torch.testing.assert_close(per_token.mean(), expected, atol=1e-5, rtol=0)
    logits, loss = gpt2(tokens, return_type="both")
    assert logits.shape == (1, 5, gpt2.cfg.d_vocab) and loss.ndim == 0
    assert gpt2(tokens, return_type=None) is None


def test_stop_at_layer_returns_the_residual_entering_that_block(gpt2):
    tokens = torch.tensor([[0, 5, 6, 7]])
    _, cache = gpt2.run_with_cache(tokens)
    torch.testing.assert_close(gpt2(tokens, stop_at_layer=1), cache["resid_pre", 1])
    torch.testing.assert_close(gpt2(tokens, stop_at_layer=-1), cache["resid_pre", 1])
    torch.testing.assert_close(gpt2(tokens, stop_at_layer=2), cache["resid_post", 1])
    with pytest.raises(BridgeError, match="stop_at_layer"):
        gpt2(tokens, stop_at_layer=5)
    assert not any(m._forward_pre_hooks for m in gpt2.hf_model.modules())


def test_text_input_tokens_and_padding(gpt2):
    tokens = gpt2.to_tokens("the cat sat")
    assert tokens[0, 0].item() == gpt2.tokenizer.bos_token_id
    assert (gpt2.to_tokens("the cat sat", prepend_bos=False) == tokens[:, 1:]).all()
    assert gpt2.to_string(tokens[0, 1:]) == "the cat sat"
    str_tokens = gpt2.to_str_tokens("the cat")
    assert len(str_tokens) == gpt2.to_tokens("the cat").shape[1]
    assert "".join(str_tokens[1:]).replace(" ", "") == "thecat"
    left = gpt2.to_tokens(["the cat sat on the mat", "hi"], padding_side="left")
    assert left[1, -1].item() != gpt2.tokenizer.pad_token_id and left[1, 0].item() == gpt2.tokenizer.pad_token_id
    batch_logits = gpt2(["the cat sat on the mat", "hi"], padding_side="left")
    alone = gpt2("hi")
    torch.testing.assert_close(batch_logits[1, -alone.shape[1] :], alone[0], atol=1e-4, rtol=0)


def test_add_hook_by_filter_permanent_and_reset(gpt2):
    calls = []
    handles = gpt2.add_hook(
        lambda n: n.endswith("hook_resid_pre"), lambda t, hook: calls.append(hook.name), is_permanent=True
    )
    assert len(handles) == gpt2.cfg.n_layers
    gpt2(torch.tensor([[0, 1]]))
    gpt2.reset_hooks()
    gpt2(torch.tensor([[0, 1]]))
    assert calls == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"] * 2
    gpt2.reset_hooks(including_permanent=True)
    gpt2(torch.tensor([[0, 1]]))
    assert len(calls) == 4


def test_hooks_context_cleans_up_after_an_error_adding_hooks(gpt2):
    with (
        pytest.raises(HookNameError),
        gpt2.hooks(
            fwd_hooks=[
                ("hook_embed", lambda t, hook: None),
                ("blocks.0.hook_resid_prex", lambda t, hook: None),
            ]
        ),
    ):
        pass
    assert not any(h.active for h in gpt2.hook_points())


def test_detach_restores_the_hf_model(gpt2_dir):
    model = bridge.load(gpt2_dir)
    hf = model.hf_model
    model.add_hook("blocks.0.ln1.hook_scale", lambda t, hook: None, is_permanent=True)
    model.detach()
    assert hf.config._attn_implementation == "sdpa"
    assert not any("forward" in m.__dict__ or m._forward_hooks for m in hf.modules())
    again = bridge.wrap(hf)
    assert again.cfg.n_layers == model.cfg.n_layers
    with pytest.raises(BridgeError, match="already wrapped"):
        bridge.wrap(hf)


def test_incl_bwd_caches_gradients(gpt2, gpt2_dir):
    """``{name}_grad`` is d(loss)/d(activation) as the independent HF model's autograd gives it (a leaf
    made at the output of its block, HF's own loss)."""
    tokens = torch.tensor([[0, 5, 6, 7]])
    _loss, cache = gpt2.run_with_cache(
        tokens, return_type="loss", incl_bwd=True, names_filter=lambda n: n.endswith("hook_resid_post")
    )
    reference = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir, attn_implementation="eager").eval()
    for layer in range(gpt2.cfg.n_layers):
        leaf = {}

        def make_leaf(_module, _args, out, leaf=leaf):
            leaf["x"] = (out[0] if isinstance(out, tuple) else out).detach().requires_grad_(True)
            return (leaf["x"], *out[1:]) if isinstance(out, tuple) else leaf["x"]

        handle = reference.transformer.h[layer].register_forward_hook(make_leaf)
        loss = reference(tokens, labels=tokens).loss
        handle.remove()
        (expected,) = torch.autograd.grad(loss, leaf["x"])
        got = cache[f"blocks.{layer}.hook_resid_post_grad"]
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(BridgeError, match="return_type='loss'"):
        gpt2.run_with_cache(tokens, incl_bwd=True)


def test_headless_model_asks_for_hidden(tmp_path):
    from public_api_adapters import GPT2Adapter

    from bridge.testing import save_tiny_model

    directory = save_tiny_model(examples_of(GPT2Adapter).example_config("GPT2Model"), tmp_path)
    model = bridge.load(directory)
    with pytest.raises(bridge.NoLMHeadError, match="return_type='hidden'"):
        model(torch.tensor([[0, 1]]))
    hidden = model(torch.tensor([[0, 1]]), return_type="hidden")
    assert hidden.shape == (1, 2, model.cfg.d_model)
