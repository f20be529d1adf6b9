"""Weight views of the ALiBi family (BLOOM per-head fused QKV, MPT ``[q | k | v]`` with ``clip_qkv``, Falcon in
its multi-query, multi-head and grouped layouts), checked by a forward pass written here from nothing but the
views, the norm parameters and the config (ALiBi slopes and rotary included), against HF's logits."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.activations import ACT2FN

import bridge
from bridge.testing import examples_of
from bridge.testing.reference import (
    REFERENCE_TOKENS,
    attention_output,
    causal_attention,
    layer_norm,
    project,
    rotate,
    wrapped_with_random_biases,
)
from bridge_alibi import BloomAdapter, FalconAdapter, MptAdapter


def _wrapped(config) -> bridge.Bridge:
    return wrapped_with_random_biases(config)  # default attention (SDPA): Falcon-ALiBi adds the bias once there


def press_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi slopes of the paper (BLOOM, Falcon): a geometric series from 2^(-8/n), interleaved extras when
    ``n_heads`` is not a power of two."""
    power = 2 ** math.floor(math.log2(n_heads))
    slopes = [2 ** (-8 * (i + 1) / power) for i in range(power)]
    extra = [2 ** (-4 * (i + 1) / power) for i in range(0, 2 * (n_heads - power), 2)]
    return torch.tensor(slopes + extra)


def mpt_slopes(n_heads: int, bias_max: float = 8.0) -> torch.Tensor:
    """MPT's slopes: ``2^(-i·bias_max/n')`` for ``n'`` the next power of two, odd ones first when ``n' > n``."""
    power = 2 ** math.ceil(math.log2(n_heads))
    slopes = torch.tensor([2 ** (-(i + 1) * bias_max / power) for i in range(power)])
    return slopes if power == n_heads else torch.cat([slopes[1::2], slopes[::2]])[:n_heads]


def attention_from_views(x: torch.Tensor, attn, model: bridge.Bridge) -> torch.Tensor:
    cfg, hf_cfg = model.cfg, model.hf_model.config
    q, k, v = project(x, attn.W_Q, attn.b_Q), project(x, attn.W_K, attn.b_K), project(x, attn.W_V, attn.b_V)
    clip = cfg.extra.get("clip_qkv")
    if clip:
        q, k, v = (t.clamp(-clip, clip) for t in (q, k, v))
    p, d = x.shape[1], cfg.d_head
    key_positions = torch.arange(p, dtype=torch.float32)
    if cfg.positional_embedding_type == "rotary":
        theta = hf_cfg.rope_parameters["rope_theta"]
        q, k = rotate(q, theta), rotate(k, theta)
        bias = 0.0
    elif cfg.model_type == "mpt":
        bias = mpt_slopes(cfg.n_heads)[:, None, None] * key_positions  # [h, 1, k]; a shift per query is moot
    elif cfg.model_type == "falcon":
        bias = press_slopes(cfg.n_heads)[:, None, None] * key_positions / math.sqrt(d)  # (q·k + alibi) / √d
    else:
        bias = press_slopes(cfg.n_heads)[:, None, None] * key_positions  # BLOOM: alibi + q·k / √d
    return attention_output(causal_attention(q, k, v, scale=d**-0.5, bias=bias), attn)


def mlp_from_views(x: torch.Tensor, mlp, cfg) -> torch.Tensor:
    return ACT2FN[cfg.act_fn](x @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out


def logits_from_views(model: bridge.Bridge, tokens: torch.Tensor) -> torch.Tensor:
    cfg = model.cfg
    resid = model.W_E[tokens]
    if cfg.extra.get("embedding_layernorm"):
        resid = layer_norm(resid, model.embed.hf)  # BLOOM's word_embeddings_layernorm
    for block in model.blocks:
        attn_in = layer_norm(resid, block.ln1.hf)
        attn_out = attention_from_views(attn_in, block.attn, model)
        if cfg.parallel_attn_mlp:
            mlp_in = layer_norm(resid, block.ln2.hf) if hasattr(block, "ln2") else attn_in
            resid = resid + attn_out + mlp_from_views(mlp_in, block.mlp, cfg)
        else:
            resid = resid + attn_out
            resid = resid + mlp_from_views(layer_norm(resid, block.ln2.hf), block.mlp, cfg)
    return layer_norm(resid, model.ln_final.hf) @ model.W_U + model.b_U


CONFIGS = {
    "bloom-6-heads": lambda: examples_of(BloomAdapter).example_config(),
    "mpt-clip-qkv": lambda: examples_of(MptAdapter).example_config(),
    "falcon-alibi-mqa-parallel": lambda: examples_of(FalconAdapter).example_config(),
    "falcon-rw-mha-sequential": lambda: examples_of(FalconAdapter).example_config(
        multi_query=False, parallel_attn=False
    ),
    "falcon-grouped": lambda: examples_of(FalconAdapter).example_config(new_decoder_architecture=True, num_kv_heads=2),
    "falcon-rotary": lambda: examples_of(FalconAdapter).example_config(alibi=False),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_from_weight_views_reproduces_hf_logits(name):
    model = _wrapped(CONFIGS[name]())
    with torch.no_grad():
        expected = model.hf_model(REFERENCE_TOKENS).logits
        got = logits_from_views(model, REFERENCE_TOKENS)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_heads_times_W_O_sum_to_attn_out(name):
    model = _wrapped(CONFIGS[name]())
    with torch.no_grad():
        _, cache = model.run_with_cache(
            REFERENCE_TOKENS, names_filter=lambda n: n.endswith(("hook_z", "hook_attn_out"))
        )
    for i, block in enumerate(model.blocks):
        heads = torch.einsum("bphd,hdm->bpm", cache["z", i], block.attn.W_O)
        torch.testing.assert_close(heads + block.attn.b_O, cache["attn_out", i], atol=1e-5, rtol=1e-5)


def test_falcon_grouped_expanded_head_h_is_raw_head_h_over_group():
    model = _wrapped(CONFIGS["falcon-grouped"]())
    attn = model.blocks[0].attn
    assert attn._W_K.shape == (2, 32, 8) and attn.W_K.shape == (4, 32, 8)
    for h in range(4):
        torch.testing.assert_close(attn.W_V[h], attn._W_V[h // 2])
        torch.testing.assert_close(attn.b_K[h], attn._b_K[h // 2])
