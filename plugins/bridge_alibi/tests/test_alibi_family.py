"""What is special to the ALiBi family, checked against hand-written references and HF's own code."""

import copy
import math

import pytest
import torch
from transformers import BloomConfig, FalconForCausalLM

import bridge
from bridge import BridgeError
from bridge.kernel.components import weight_in_out
from bridge.testing import examples_of, save_tiny_model
from bridge_alibi import BloomAdapter, FalconAdapter, FalconEagerAlibiWarning, MptAdapter

ALL = [
    (BloomAdapter, "BloomForCausalLM"),
    (MptAdapter, "MptForCausalLM"),
    (FalconAdapter, "FalconForCausalLM"),
    (FalconAdapter, "falcon-rw"),
    (FalconAdapter, "falcon-grouped"),
    (FalconAdapter, "falcon-rotary"),
]
IDS = [name for _, name in ALL]


def paper_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi slopes as in Press et al. (2022): for n a power of two the geometric sequence
    2^(-8/n), 2^(-16/n), …, 2^(-8); otherwise those of the closest lower power of two m, followed by
    every other slope of 2m."""

    def geometric(m: int) -> list[float]:
        return [2 ** (-8 * (i + 1) / m) for i in range(m)]

    m = 2 ** math.floor(math.log2(n_heads))
    return torch.tensor(geometric(m) + geometric(2 * m)[0::2][: n_heads - m])


def attn_cache(model, tokens, **kwargs):
    return model.run_with_cache(tokens, names_filter=lambda n: ".attn." in n, **kwargs)[1]


def left_padded(pair, lengths=(9, 6)):
    width = max(lengths)
    tokens = pair.tokens(len(lengths), width)
    mask = torch.zeros_like(tokens)
    for i, n in enumerate(lengths):
        mask[i, width - n :] = 1
    return tokens * mask, mask


def test_bloom_hooks_agree_with_a_hand_written_alibi_reference(pair_for):
    """Six heads (not a power of two), left padding: ``hook_alibi`` is slope·(key position among real
    tokens); scores, pattern and z follow from ``hook_q/k/v`` by the paper's formula
    softmax(q·k/√d − slope·(i − j)), which differs from BLOOM's slope·j only by a per-query constant."""
    pair = pair_for(BloomAdapter, "BloomForCausalLM")
    model = pair.bridge
    h, d = model.cfg.n_heads, model.cfg.d_head
    assert h == 6
    tokens, mask = left_padded(pair)
    cache = attn_cache(model, tokens, attention_mask=mask)
    slopes = paper_slopes(h)[None, :, None, None]  # [1, h, 1, 1]
    pos = (mask.cumsum(-1) - 1).clamp(min=0) * mask  # [b, k]: position among real tokens
    p = tokens.shape[1]
    allowed = torch.ones(p, p, dtype=torch.bool).tril()[None, None] & mask.bool()[:, None, None, :]
    real_rows = mask.bool()  # [b, q]: padded queries see no key; their rows are not compared
    for layer in range(model.cfg.n_layers):
        prefix = f"blocks.{layer}.attn."
        q, k, v = (cache[prefix + f"hook_{x}"] for x in "qkv")
        torch.testing.assert_close(cache[prefix + "hook_alibi"], slopes * pos[:, None, None, :].float())
        raw = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        scores = cache[prefix + "hook_attn_scores"]
        expected_scores = raw + slopes * pos[:, None, None, :]
        torch.testing.assert_close(scores[allowed.expand_as(scores)], expected_scores[allowed.expand_as(scores)])
        assert (scores[~allowed.expand_as(scores)] < -1e30).all()
        paper = raw - slopes * (pos[:, None, :, None] - pos[:, None, None, :])
        pattern = torch.softmax(paper.masked_fill(~allowed, -math.inf), dim=-1).nan_to_num(0.0)
        got = cache[prefix + "hook_pattern"]
        for b in range(2):
            rows = real_rows[b]
            torch.testing.assert_close(got[b][:, rows], pattern[b][:, rows], atol=1e-6, rtol=1e-5)
            z = torch.einsum("hqk,khd->qhd", pattern[b], v[b])
            torch.testing.assert_close(cache[prefix + "hook_z"][b][rows], z[rows], atol=1e-6, rtol=1e-5)


def test_mpt_alibi_is_the_papers_relative_bias(pair_for):
    """MPT adds slope·(j − (k − 1)): the paper's slopes (4 heads), relative to the last key."""
    pair = pair_for(MptAdapter, "MptForCausalLM")
    model = pair.bridge
    tokens = pair.tokens(2, 7)
    cache = attn_cache(model, tokens)
    k = torch.arange(7) - 6
    expected = paper_slopes(model.cfg.n_heads)[None, :, None, None] * k  # [1, h, 1, k]
    torch.testing.assert_close(cache["blocks.0.attn.hook_alibi"], expected)


def test_mpt_clip_qkv_hooks_see_the_clipped_values_and_patches_are_not_reclipped(pair_for):
    pair = pair_for(MptAdapter, "MptForCausalLM")
    model = pair.bridge
    clip = model.hf_model.config.attn_config.clip_qkv
    tokens = pair.tokens()
    cache = attn_cache(model, tokens)
    hf_block = model.hf_model.transformer.blocks[0]
    for name in ("q", "k", "v"):
        got = cache[f"blocks.0.attn.hook_{name}"]
        assert got.abs().max() <= clip + 1e-7
    ref_block = pair.reference.transformer.blocks[0]  # the independent HF model: its own norm_1 output
    seen = {}
    handle = ref_block.norm_1.register_forward_hook(lambda _m, _args, out: seen.__setitem__("ln1", out))
    with torch.no_grad():
        pair.reference(tokens)
        fused = ref_block.attn.Wqkv(seen["ln1"])
    handle.remove()
    assert (fused.abs() > clip).float().mean() > 0.05, "the example config clips nothing"
    q = fused.clamp(-clip, clip)[..., : model.cfg.d_model].unflatten(-1, (model.cfg.n_heads, -1))
    torch.testing.assert_close(cache["blocks.0.attn.hook_q"], q, atol=1e-6, rtol=0)
    big = 10 * clip
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_k", lambda k, hook: torch.full_like(k, big))]):
        patched = attn_cache(model, tokens)
    expected = torch.einsum("bqhd,bkhd->bhqk", patched["blocks.0.attn.hook_q"], torch.full_like(q, big))
    expected = expected * hf_block.attn.softmax_scale + patched["blocks.0.attn.hook_alibi"]
    causal = torch.ones(12, 12, dtype=torch.bool).tril()
    torch.testing.assert_close(
        patched["blocks.0.attn.hook_attn_scores"][..., causal], expected[..., causal], atol=1e-5, rtol=1e-5
    )


def test_falcon_follows_hf_sdpa_semantics_alibi_counted_once(pair_for, model_dirs):
    """HF's Falcon-ALiBi eager path adds the bias twice and disagrees with its SDPA path; the bridge
    (both paths) equals SDPA, and so does the eager reference with the duplicate removed."""
    pair = pair_for(FalconAdapter, "FalconForCausalLM")
    directory = model_dirs["FalconForCausalLM"]
    sdpa = FalconForCausalLM.from_pretrained(directory, attn_implementation="sdpa").eval()
    eager = FalconForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    tokens = pair.tokens()
    expected = sdpa(tokens).logits
    assert (eager(tokens).logits - expected).abs().max() > 1e-3, "HF's eager and SDPA paths now agree"
    torch.testing.assert_close(pair.reference(tokens).logits, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(pair.bridge(tokens), expected, atol=1e-4, rtol=0)
    logits, cache = pair.bridge.run_with_cache(tokens)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
    # Falcon rounds the paper's slopes to bfloat16 and scales the bias by 1/√d.
    slopes = paper_slopes(pair.bridge.cfg.n_heads).bfloat16()[None, :, None, None]
    alibi = (slopes * torch.arange(12)).float() / math.sqrt(pair.bridge.cfg.d_head)
    torch.testing.assert_close(cache["blocks.1.attn.hook_alibi"], alibi.expand(2, -1, -1, -1))


def test_falcon_alibi_loaded_eager_warns(model_dirs):
    with pytest.warns(FalconEagerAlibiWarning, match="twice"):
        model = bridge.load(model_dirs["FalconForCausalLM"], attn_implementation="eager")
    model.detach()


@pytest.mark.parametrize("path", ["native", "hooked"])
@pytest.mark.parametrize(("adapter", "name"), ALL, ids=IDS)
def test_head_ablation_equals_weight_surgery(pair_for, adapter, name, path):
    """Zeroing head 1 at ``hook_z`` (or at the opt-in ``hook_result``) equals zeroing its rows of the
    output projection (the kit's check, for components that are not core's ``Attention``)."""
    pair = pair_for(adapter, name, path)
    model, head = pair.bridge, 1
    tokens = pair.tokens()

    def ablate(t, hook):
        return t.index_fill(2, torch.tensor([head]), 0.0)

    with pair.on_path():
        got = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", ablate)])
        model.set_use_attn_result(True)
        via_result = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_result", ablate)])
        model.set_use_attn_result(False)
    surgery = copy.deepcopy(pair.reference)
    out_proj = dict(surgery.named_modules())[
        next(n for n, m in model.hf_model.named_modules() if m is model.blocks[0].attn.out_proj)
    ]
    d = model.cfg.d_head
    with torch.no_grad():
        weight_in_out(out_proj)[head * d : (head + 1) * d] = 0.0
    expected = surgery(tokens).logits
    assert (expected - pair.reference(tokens).logits).abs().max() > 1e-6
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(via_result, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("adapter", "name"), ALL, ids=IDS)
def test_hook_result_sums_to_the_attention_output(pair_for, adapter, name):
    pair = pair_for(adapter, name)
    model = pair.bridge
    tokens = pair.tokens()
    model.set_use_attn_result(True)
    try:
        logits, cache = model.run_with_cache(tokens)
    finally:
        model.set_use_attn_result(False)
    torch.testing.assert_close(logits, pair.reference(tokens).logits, atol=1e-4, rtol=0)
    result = cache["blocks.0.attn.hook_result"]
    assert result.shape == (*tokens.shape, model.cfg.n_heads, model.cfg.d_model)
    bias = model.blocks[0].attn.out_proj.bias
    summed = result.sum(2) + (bias if bias is not None else 0.0)
    torch.testing.assert_close(summed, cache["blocks.0.hook_attn_out"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("adapter", "name"), ALL, ids=IDS)
def test_shapes_of_family_hooks(pair_for, adapter, name):
    pair = pair_for(adapter, name)
    model, cfg = pair.bridge, pair.bridge.cfg
    cache = attn_cache(model, pair.tokens(2, 5))
    assert cache["blocks.1.attn.hook_k"].shape == (2, 5, cfg.n_key_value_heads, cfg.d_head)
    if name == "falcon-rotary":
        assert "blocks.1.attn.hook_alibi" not in model.hook_dict
        assert cache["blocks.1.attn.hook_rot_k"].shape == (2, 5, cfg.n_key_value_heads, cfg.d_head)
        return
    batch = 1 if adapter is MptAdapter else 2
    assert cache["blocks.1.attn.hook_alibi"].shape == (batch, cfg.n_heads, 1, 5)
    assert "blocks.1.attn.hook_rot_q" not in model.hook_dict


def test_falcon_kv_layouts(pair_for):
    """Multi-query: one kv head shared by all; grouped: ``n_kv`` heads, each shared by its group."""
    for name, n_kv in (("FalconForCausalLM", 1), ("falcon-rw", 4), ("falcon-grouped", 2)):
        pair = pair_for(FalconAdapter, name)
        assert pair.bridge.cfg.n_key_value_heads == n_kv
    pair = pair_for(FalconAdapter, "falcon-grouped")
    model = pair.bridge
    tokens = pair.tokens()
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_v", lambda v, hook: v.index_fill(2, torch.tensor([0]), 0.0))]):
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
    z = cache["blocks.0.attn.hook_z"]
    assert z[:, :, :2].abs().max() == 0, "kv head 0 feeds query heads 0 and 1"
    assert z[:, :, 2:].abs().amin(dim=(0, 1, 3)).gt(0).all()


def test_falcon_rotary_rot_hooks_are_hf_rotary_of_q_and_k(pair_for):
    from transformers.models.falcon.modeling_falcon import apply_rotary_pos_emb

    pair = pair_for(FalconAdapter, "falcon-rotary")
    model = pair.bridge
    tokens = pair.tokens(2, 8)
    cache = attn_cache(model, tokens)
    cos, sin = model.hf_model.transformer.rotary_emb(cache["blocks.1.attn.hook_q"], torch.arange(8)[None])
    q, k = (cache[f"blocks.1.attn.hook_{x}"].transpose(1, 2) for x in "qk")
    rot_q, rot_k = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(cache["blocks.1.attn.hook_rot_q"], rot_q.transpose(1, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(cache["blocks.1.attn.hook_rot_k"], rot_k.transpose(1, 2), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("adapter", "name"), ALL, ids=IDS)
def test_only_layers_with_attention_hooks_are_re_expressed(pair_for, adapter, name):
    model = pair_for(adapter, name).bridge
    hf_layers = [block.attn.hf for block in model.blocks]
    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", lambda t, hook: None)]):
        assert "forward" not in hf_layers[0].__dict__
        assert "forward" in hf_layers[1].__dict__
    assert not any("forward" in layer.__dict__ for layer in hf_layers)


@pytest.mark.parametrize(("adapter", "name"), ALL, ids=IDS)
def test_generation_with_a_kv_cache_is_unchanged_by_hooks(pair_for, adapter, name):
    """With a KV cache the hooked path updates it as HF does: greedy generation with every attention
    hook cached equals HF's, and decode steps see one query position."""
    pair = pair_for(adapter, name)
    model = pair.bridge
    prompt = pair.tokens(1, 5)
    expected = pair.reference.generate(
        prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0, use_cache=True
    )
    seen = []
    with model.hooks(fwd_hooks=[(lambda n: ".attn.hook_" in n, lambda t, hook: seen.append((hook.name, t.shape)))]):
        got = model.hf_model.generate(
            prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0, use_cache=True
        )
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    q_shapes = [shape for n, shape in seen if n == "blocks.0.attn.hook_q"]
    assert [s[1] for s in q_shapes] == [5, 1, 1, 1]
    pattern_shapes = [shape for n, shape in seen if n == "blocks.0.attn.hook_pattern"]
    assert [s[-1] for s in pattern_shapes] == [5, 6, 7, 8]


def test_unsupported_bloom_variants_raise_clear_errors(tmp_path):
    for overrides, match in (
        ({"apply_residual_connection_post_layernorm": True}, "residual"),
        ({"pretraining_tp": 2, "slow_but_exact": True}, "slow_but_exact"),
    ):
        config = BloomConfig(**{**examples_of(BloomAdapter).example_config().to_dict(), **overrides})
        directory = save_tiny_model(config, tmp_path / match)
        with pytest.raises(BridgeError, match=match):
            bridge.load(directory)
