"""TransformerLens glue on a tiny GPT-2: mode, strict arguments, start_at_layer, token helpers, loss_fn,
input_to_embed, hook bookkeeping (ctx, layer, perma hooks, mod_dict) and the cfg fields TL code reads.

References are independent of the bridge: a separately loaded HF model, ``torch.nn.functional``, and
hand-written searches over token ids."""

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from public_api_adapters import GPT2Adapter
from torch.nn import functional as F

import bridge
from bridge import BridgeError
from bridge.kernel.errors import BadInputError, HookOutputError, UnknownArgumentError
from bridge.testing import build_tiny_model, examples_of, tiny_tokenizer

LONG_TEXT = " ".join(["The cat sat on the mat and the dog sat on the log."] * 12)


@pytest.fixture(scope="module")
def reference(gpt2_dir):
    return transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()


def tokens_of(model, batch=2, pos=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, model.cfg.d_vocab, (batch, pos), generator=generator)


# ------------------------------------------------------------------ mode


def test_load_gives_eval_mode_and_train_eval_follow_the_hf_model(gpt2):
    assert gpt2.training is False and gpt2.hf_model.training is False
    gpt2.train()
    assert gpt2.training is True and gpt2.hf_model.training is True
    assert all(m.training for m in gpt2.hf_model.modules())
    gpt2.hf_model.eval()
    assert gpt2.training is False
    gpt2.eval()
    assert not any(m.training for m in gpt2.hf_model.modules())


def test_wrap_keeps_the_hf_model_mode():
    hf_model = build_tiny_model(examples_of(GPT2Adapter).example_config()).train()
    model = bridge.wrap(hf_model, tiny_tokenizer())
    assert model.training is True
    model.eval()
    assert hf_model.training is False


# ------------------------------------------------------- strict arguments


def test_unknown_forward_kwarg_raises_with_close_match(gpt2):
    tokens = tokens_of(gpt2)
    with pytest.raises(UnknownArgumentError, match="'return_type'"):
        gpt2(tokens, retrun_type="loss")
    with pytest.raises(UnknownArgumentError, match=r"run_with_cache\(\).*'pos_slcie'.*'pos_slice'"):
        gpt2.run_with_cache(tokens, pos_slcie=-1)
    with pytest.raises(UnknownArgumentError, match="'fwd_hooks'"):
        gpt2.run_with_hooks(tokens, fwd_hook=[])
    with pytest.raises(UnknownArgumentError, match="'names_filter'"):
        gpt2.run_with_cache(tokens, name_filter="hook_embed")


def test_hf_passthrough_kwargs_reach_the_hf_model(gpt2, reference):
    tokens = tokens_of(gpt2)
    position_ids = torch.arange(3, 3 + tokens.shape[1]).expand(tokens.shape)
    expected = reference(tokens, position_ids=position_ids).logits
    torch.testing.assert_close(gpt2(tokens, position_ids=position_ids), expected, atol=1e-5, rtol=0)
    out = gpt2(tokens, use_cache=True, output_attentions=False)
    torch.testing.assert_close(out, reference(tokens).logits, atol=1e-5, rtol=0)


def test_return_type_is_validated(gpt2):
    with pytest.raises(BadInputError, match=r"'logit'.*'logits', 'loss', 'both', 'hidden', None"):
        gpt2(tokens_of(gpt2), return_type="logit")


def test_tl_only_arguments_raise_clearly(gpt2):
    tokens = tokens_of(gpt2)
    with pytest.raises(BadInputError, match="past_key_values"):
        gpt2(tokens, past_kv_cache=object())
    with pytest.raises(BadInputError, match="shortformer"):
        gpt2(tokens, shortformer_pos_embed=torch.zeros(2, 9, gpt2.cfg.d_model))


# ----------------------------------------------------------------- loss


def test_loss_fn_matches_cross_entropy_with_and_without_mask(gpt2):
    tokens = tokens_of(gpt2, batch=3, pos=7)
    logits = gpt2(tokens)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(gpt2.loss_fn(logits, tokens), expected, atol=1e-6, rtol=0)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [0] * 2 + [1] * 5])
    targets = tokens[:, 1:].masked_fill(~(mask[:, 1:].bool() & mask[:, :-1].bool()), -100)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(gpt2.loss_fn(logits, tokens, mask), expected, atol=1e-6, rtol=0)
    per_token = gpt2.loss_fn(logits, tokens, mask, per_token=True)
    unreduced = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="none")
    torch.testing.assert_close(per_token, unreduced, atol=1e-6, rtol=0)


def test_loss_without_a_prediction_raises_instead_of_nan(gpt2):
    with pytest.raises(BadInputError, match="at least 2 tokens"):
        gpt2(torch.tensor([[5]]), return_type="loss")
    with pytest.raises(BadInputError, match="masks every token"):
        gpt2(torch.tensor([[5, 6, 7]]), attention_mask=torch.tensor([[0, 0, 0]]), return_type="loss")
    with pytest.raises(BadInputError, match="no next-token prediction"):
        gpt2(torch.tensor([[5, 6, 7]]), attention_mask=torch.tensor([[1, 0, 1]]), return_type="loss")


# --------------------------------------------------------- start_at_layer


def test_start_at_layer_continues_from_the_hf_residual(gpt2, reference):
    tokens = tokens_of(gpt2)
    hf = reference(tokens, output_hidden_states=True)
    logits = gpt2(hf.hidden_states[1], start_at_layer=1)
    torch.testing.assert_close(logits, hf.logits, atol=1e-5, rtol=0)
    loss = gpt2(hf.hidden_states[1], start_at_layer=1, tokens=tokens, return_type="loss")
    torch.testing.assert_close(loss, reference(tokens, labels=tokens).loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(gpt2(hf.hidden_states[0], start_at_layer=0, stop_at_layer=1), hf.hidden_states[1])
    assert gpt2(hf.hidden_states[1], start_at_layer=1, stop_at_layer=1) is hf.hidden_states[1]


def test_start_at_layer_with_a_patched_residual_equals_a_pre_hook_on_the_hf_block(gpt2, reference):
    tokens = tokens_of(gpt2)
    patched = torch.randn(*tokens.shape, gpt2.cfg.d_model, generator=torch.Generator().manual_seed(3))

    def replace(_module, args, kwargs):
        return (patched, *args[1:]), kwargs

    handle = reference.transformer.h[1].register_forward_pre_hook(replace, with_kwargs=True)
    try:
        expected = reference(tokens).logits
    finally:
        handle.remove()
    fired = []
    out = gpt2.run_with_hooks(
        patched, start_at_layer=1, fwd_hooks=[(lambda n: True, lambda t, hook: fired.append(hook.name))]
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert fired and all(n.startswith(("blocks.1.", "ln_final")) for n in fired), fired


@pytest.mark.parametrize(
    "name",
    [
        "blocks.1.hook_resid_pre",
        "blocks.1.ln1.hook_normalized",
        "blocks.1.attn.hook_q",
        "blocks.1.attn.hook_pattern",
        "blocks.1.attn.hook_z",
        "blocks.1.hook_attn_out",
        "blocks.1.hook_resid_mid",
        "blocks.1.mlp.hook_post",
        "blocks.1.hook_mlp_out",
    ],
)
def test_an_intervention_in_the_start_block_acts_as_in_the_full_forward(gpt2, reference, name):
    """``start_at_layer=1`` from HF's residual with an intervention at a hook of block 1 gives what the full forward
    with the same intervention gives (the start block's own hooks fire and are used)."""
    tokens = tokens_of(gpt2)

    def halve(t, hook):
        return t * 0.5

    full = gpt2.run_with_hooks(tokens, fwd_hooks=[(name, halve)])
    assert (full - gpt2(tokens)).abs().max() > 1e-3, f"halving {name} changes nothing"
    residual = reference(tokens, output_hidden_states=True).hidden_states[1]
    started = gpt2.run_with_hooks(residual, start_at_layer=1, fwd_hooks=[(name, halve)])
    torch.testing.assert_close(started, full, atol=1e-5, rtol=0)


def test_start_at_layer_bad_arguments(gpt2):
    residual = torch.zeros(1, 4, gpt2.cfg.d_model)
    with pytest.raises(BadInputError, match="residual stream"):
        gpt2(torch.tensor([[1, 2, 3]]), start_at_layer=1)
    with pytest.raises(BadInputError, match="needs the tokens"):
        gpt2(residual, start_at_layer=1, return_type="loss")
    with pytest.raises(BadInputError, match=r"start_at_layer must be an int in \[-2, 2\]"):
        gpt2(residual, start_at_layer=5)
    with pytest.raises(BadInputError, match="comes before"):
        gpt2(residual, start_at_layer=1, stop_at_layer=0)


def test_input_to_embed_feeds_start_at_layer_zero(gpt2, reference):
    residual, tokens, shortformer, mask = gpt2.input_to_embed(["Hello world", "The cat sat on the mat"])
    assert shortformer is None and mask is not None and mask.shape == tokens.shape
    hf = reference(tokens, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()  # padded positions get position 1 here, HF counts them on; only real ones matter
    torch.testing.assert_close(residual[real], hf.hidden_states[0][real], atol=1e-6, rtol=0)
    out = gpt2(residual, start_at_layer=0, tokens=tokens, attention_mask=mask)
    torch.testing.assert_close(out, gpt2(tokens, attention_mask=mask), atol=1e-5, rtol=0)
    _, _, _, no_mask = gpt2.input_to_embed("Hello world")
    assert no_mask is None


# ---------------------------------------------------------------- tokens


def test_to_tokens_truncates_to_n_ctx(gpt2):
    n_ctx = gpt2.cfg.n_ctx
    full = gpt2.to_tokens(LONG_TEXT, truncate=False)
    assert full.shape[1] > n_ctx
    cut = gpt2.to_tokens(LONG_TEXT)
    assert cut.shape == (1, n_ctx)
    assert torch.equal(cut, full[:, :n_ctx])
    assert gpt2(LONG_TEXT).shape[1] == n_ctx
    assert gpt2.to_tokens("Hello", move_to_device=False).device.type == "cpu"


def test_to_str_tokens_of_lists_and_batches(gpt2):
    texts = ["Hello world", "The cat sat"]
    nested = gpt2.to_str_tokens(texts)
    assert nested == [gpt2.to_str_tokens(t) for t in texts]
    tokenizer = gpt2.tokenizer
    for text, strs in zip(texts, nested, strict=True):
        ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        assert strs == [tokenizer.decode([i]) for i in ids]
    batch = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert gpt2.to_str_tokens(batch) == [[tokenizer.decode([i]) for i in row] for row in batch.tolist()]
    assert gpt2.to_str_tokens(batch[:1]) == gpt2.to_str_tokens(batch[0])


def test_single_tokens_and_positions(gpt2):
    tokenizer = gpt2.tokenizer
    the = tokenizer(" the", add_special_tokens=False)["input_ids"]
    assert len(the) == 1
    assert gpt2.to_single_token(" the") == the[0]
    assert gpt2.to_single_str_token(the[0]) == tokenizer.decode(the)
    with pytest.raises(BadInputError, match="not one"):
        gpt2.to_single_token(" cat sat on the mat")
    text = "the cat sat on the mat and the cat"
    ids = gpt2.to_tokens(text)[0].tolist()
    where = [i for i, t in enumerate(ids) if t == the[0]]
    assert len(where) >= 2
    assert gpt2.get_token_position(" the", text) == where[0]
    assert gpt2.get_token_position(the[0], torch.tensor(ids), mode="last") == where[-1]
    with pytest.raises(BadInputError, match="does not occur"):
        gpt2.get_token_position(" the", "Hello world")
    with pytest.raises(BadInputError, match="mode"):
        gpt2.get_token_position(" the", text, mode="middle")


# ----------------------------------------------------- hook bookkeeping


def test_hook_ctx_layer_and_reset(gpt2):
    hook = gpt2.hook_dict["blocks.1.attn.hook_z"]
    assert hook.layer() == 1
    with pytest.raises(BridgeError, match="not inside a block"):
        gpt2.hook_dict["hook_embed"].layer()

    def remember(tensor, hook):
        hook.ctx["norm"] = tensor.norm().item()

    gpt2.run_with_hooks(tokens_of(gpt2), fwd_hooks=[("blocks.1.attn.hook_z", remember)])
    assert "norm" in hook.ctx
    gpt2.reset_hooks(clear_contexts=False)
    assert "norm" in hook.ctx
    gpt2.reset_hooks()
    assert hook.ctx == {}
    gpt2.run_with_hooks(tokens_of(gpt2), fwd_hooks=[("blocks.1.attn.hook_z", remember)], clear_contexts=True)
    assert hook.ctx == {}


def test_perma_hooks_and_remove_all_hook_fns(gpt2):
    seen = []
    gpt2.add_perma_hook("hook_embed", lambda t, hook: seen.append("perma"))
    gpt2.add_hook("hook_embed", lambda t, hook: seen.append("temp"))
    gpt2.add_hook("hook_embed", lambda g, hook: None, dir="bwd")
    gpt2.remove_all_hook_fns(direction="bwd")
    point = gpt2.hook_dict["hook_embed"]
    assert len(point.fwd_hooks) == 2 and not point.bwd_hooks
    gpt2.reset_hooks()
    gpt2(tokens_of(gpt2), return_type=None)
    assert seen == ["perma"]
    gpt2.remove_all_hook_fns(including_permanent=True)
    assert not point.fwd_hooks
    with pytest.raises(BridgeError, match="direction"):
        gpt2.remove_all_hook_fns(direction="forward")


def test_mod_dict_names_components_and_hook_points(gpt2):
    mods = gpt2.mod_dict
    assert mods["blocks.0.attn.hook_q"] is gpt2.hook_dict["blocks.0.attn.hook_q"]
    assert mods["blocks.0.attn"] is gpt2.blocks[0].attn
    assert set(gpt2.hook_dict) <= set(mods)
    assert mods["unembed"] is gpt2.unembed  # the bridge's Unembed component, as in TransformerLens
    assert not any(name.startswith("hf_model") or name.startswith("unembed.") for name in mods)


def test_generator_names_filter_is_not_used_up(gpt2):
    names = (n for n in ["hook_embed", "blocks.0.hook_resid_post"])
    _, cache = gpt2.run_with_cache(tokens_of(gpt2), names_filter=names)
    assert set(cache) == {"hook_embed", "blocks.0.hook_resid_post"}


def test_non_callable_hook_is_rejected_at_add_time(gpt2):
    with pytest.raises(BridgeError, match="callable"):
        gpt2.add_hook("hook_embed", None)
    assert not gpt2.hook_dict["hook_embed"].active


def test_hook_returning_wrong_dtype_or_device_names_the_hook(gpt2):
    def to_double(tensor, hook):
        return tensor.double()

    def to_meta(tensor, hook):
        return tensor.to("meta")

    with pytest.raises(HookOutputError, match=r"to_double.*blocks\.0\.hook_resid_mid.*float64.*float32"):
        gpt2.run_with_hooks(tokens_of(gpt2), fwd_hooks=[("blocks.0.hook_resid_mid", to_double)])
    with pytest.raises(HookOutputError, match=r"to_meta.*meta.*cpu"):
        gpt2.run_with_hooks(tokens_of(gpt2), fwd_hooks=[("blocks.0.hook_resid_mid", to_meta)])


def test_backward_hook_returning_a_non_tensor_raises_clearly(gpt2):
    loss = gpt2.run_with_hooks(
        tokens_of(gpt2), return_type="loss", bwd_hooks=[("blocks.0.hook_resid_mid", lambda g, hook: "oops")]
    )
    with pytest.raises(HookOutputError, match=r"Backward hook.*blocks\.0\.hook_resid_mid.*returned a str"):
        loss.backward()


@pytest.mark.parametrize("name", ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.1.attn.hook_v"])
def test_in_place_edits_of_split_views_work_under_autograd(gpt2, name):
    tokens = tokens_of(gpt2)

    def zero_in_place(tensor, hook):
        tensor[:, :, 1] = 0.0

    def zero_copy(tensor, hook):
        out = tensor.clone()
        out[:, :, 1] = 0.0
        return out

    edited, loss = gpt2.run_with_hooks(tokens, return_type="both", fwd_hooks=[(name, zero_in_place)])
    copied = gpt2.run_with_hooks(tokens, fwd_hooks=[(name, zero_copy)])
    loss.backward()
    torch.testing.assert_close(edited, copied, atol=0, rtol=0)
    assert (edited - gpt2(tokens)).abs().max() > 1e-5


@pytest.mark.parametrize("name", ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.1.attn.hook_v"])
def test_in_place_edits_of_split_views_without_autograd(gpt2, name):
    """Without autograd the hook gets the view itself (no copy); an in-place edit still acts as a returned copy."""
    tokens = tokens_of(gpt2)

    def zero_in_place(tensor, hook):
        tensor[:, :, 1] = 0.0

    def zero_copy(tensor, hook):
        out = tensor.clone()
        out[:, :, 1] = 0.0
        return out

    with torch.no_grad():
        edited = gpt2.run_with_hooks(tokens, fwd_hooks=[(name, zero_in_place)])
        copied = gpt2.run_with_hooks(tokens, fwd_hooks=[(name, zero_copy)])
        clean = gpt2(tokens)
    torch.testing.assert_close(edited, copied, atol=0, rtol=0)
    assert (edited - clean).abs().max() > 1e-5


# ------------------------------------------------------------------ cfg


def test_cfg_fields_tl_code_reads(gpt2):
    cfg, hf_config = gpt2.cfg, gpt2.hf_model.config
    assert cfg.d_vocab_out == hf_config.vocab_size
    assert cfg.original_architecture == "GPT2LMHeadModel"
    assert cfg.model_name == hf_config._name_or_path.rstrip("/").rsplit("/", 1)[-1]
    assert cfg.tokenizer_prepends_bos is (len(gpt2.tokenizer.encode("")) > 0)
    assert cfg.eps == hf_config.layer_norm_epsilon and cfg.init_range == hf_config.initializer_range
    assert cfg.normalization_type == "LN" and cfg.final_rms is False and cfg.gated_mlp is False
    assert cfg.attn_only is False and cfg.default_padding_side == gpt2.tokenizer.padding_side
    expected_params = sum(p.numel() for p in gpt2.hf_model.transformer.h.parameters() if p.ndim == 2)
    assert cfg.n_params == expected_params
    assert (cfg.use_attn_result, cfg.use_split_qkv_input, cfg.use_attn_in, cfg.use_hook_mlp_in) == (False,) * 4
    gpt2.set_use_attn_result(True)
    gpt2.set_use_split_qkv_input(True)
    gpt2.set_use_hook_mlp_in(True)
    assert (cfg.use_attn_result, cfg.use_split_qkv_input, cfg.use_attn_in, cfg.use_hook_mlp_in) == (
        True,
        True,
        False,
        True,
    )
    gpt2.set_use_attn_result(False)
    assert cfg.use_attn_result is False


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), pos=st.integers(2, 10), seed=st.integers(0, 1000))
def test_loss_fn_per_token_mean_is_the_loss(gpt2_dir, batch, pos, seed):
    model = _cached_model(gpt2_dir)
    tokens = tokens_of(model, batch, pos, seed)
    logits, loss = model(tokens, return_type="both")
    torch.testing.assert_close(model.loss_fn(logits, tokens, per_token=True).mean(), loss, atol=1e-6, rtol=0)
    expected = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:])
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)


_MODELS: dict = {}


def _cached_model(directory):
    if directory not in _MODELS:
        _MODELS[directory] = bridge.load(directory)
    return _MODELS[directory]


# ------------------------------------------------------------ KV cache


@pytest.mark.parametrize("with_mask", [False, True])
def test_forward_with_an_hf_cache_continues_the_sequence(gpt2, reference, with_mask):
    """HF's convention: with ``past_key_values`` the mask covers cached and new positions, and positions
    count on from the cache."""
    tokens = tokens_of(gpt2, batch=2, pos=9)
    expected = reference(tokens).logits
    cache = transformers.DynamicCache(config=gpt2.hf_model.config)
    head = gpt2(tokens[:, :6], past_key_values=cache, use_cache=True)
    mask = {"attention_mask": torch.ones(2, 9, dtype=torch.long)} if with_mask else {}
    tail = gpt2(tokens[:, 6:], past_key_values=cache, use_cache=True, **mask)
    torch.testing.assert_close(torch.cat([head, tail], dim=1), expected, atol=1e-5, rtol=0)
    with pytest.raises(BadInputError, match="attention_mask has shape"):
        gpt2(tokens[:, 6:], attention_mask=torch.ones(2, 9, dtype=torch.long))


def test_start_at_layer_computes_no_earlier_block(gpt2, reference):
    """The blocks before ``start_at_layer`` are skipped, not run and overwritten; nothing of the skip remains."""
    tokens = tokens_of(gpt2)
    hf = reference(tokens, output_hidden_states=True)
    calls = []
    first_attention = gpt2.hf_model.transformer.h[0].attn
    handle = first_attention.register_forward_hook(lambda *_: calls.append(1))
    try:
        logits = gpt2(hf.hidden_states[1], start_at_layer=1)
        assert calls == []
        gpt2(tokens)
        assert calls == [1]
    finally:
        handle.remove()
    torch.testing.assert_close(logits, hf.logits, atol=1e-5, rtol=0)
    assert all("forward" not in block.__dict__ for block in gpt2.hf_model.transformer.h)
