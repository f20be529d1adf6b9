"""Weight views of the fused-QKV family (GPT-2 grouped, NeoX per-head, BigCode MQA and MHA, Conv1D and
``nn.Linear``), checked by a forward pass written here from nothing but the views, the norm parameters
and the config, against HF's logits."""

from __future__ import annotations

import pytest
import torch
from transformers.activations import ACT2FN

import bridge
from bridge.testing.fixtures import build_tiny_model, tiny_tokenizer
from bridge_gpt2 import GPT2Adapter, GPTBigCodeAdapter, GPTNeoXAdapter

TOKENS = torch.tensor([[0, 5, 17, 42, 9, 77, 3, 11, 64, 2], [0, 8, 8, 100, 2, 64, 31, 7, 7, 120]])


def _wrapped(config) -> bridge.Bridge:
    hf_model = build_tiny_model(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random biases and norm weights: a misplaced one must show
        for param in hf_model.parameters():
            if param.ndim == 1:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return bridge.wrap(hf_model, tiny_tokenizer())


def layer_norm(x: torch.Tensor, norm: bridge.components.Norm) -> torch.Tensor:
    centred = x - x.mean(-1, keepdim=True)
    return centred / (centred.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt() * norm.hf.weight + norm.hf.bias


def rotate(x: torch.Tensor, rotary_dim: int, theta: float) -> torch.Tensor:
    """NeoX rotary on the first ``rotary_dim`` features of each head, halves paired: ``x`` ``[b, p, h, d]``."""
    positions = torch.arange(x.shape[1], dtype=torch.float32)
    inv_freq = theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim)
    angles = positions[:, None] * inv_freq[None, :]  # [p, rotary_dim / 2]
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    first, second = rot.chunk(2, dim=-1)
    rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
    return torch.cat([rotated, rest], dim=-1)


def attention_from_views(x: torch.Tensor, attn, cfg) -> torch.Tensor:
    """``x`` ``[b, p, d_model]`` through one layer's views: causal softmax attention, ``Σ_h z_h W_O[h] + b_O``."""
    q = torch.einsum("bpm,hmd->bphd", x, attn.W_Q) + attn.b_Q
    k = torch.einsum("bpm,hmd->bphd", x, attn.W_K) + attn.b_K
    v = torch.einsum("bpm,hmd->bphd", x, attn.W_V) + attn.b_V
    if cfg.positional_embedding_type == "rotary":
        q, k = rotate(q, cfg.rotary_dim, cfg.extra["rope_theta"]), rotate(k, cfg.rotary_dim, cfg.extra["rope_theta"])
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / cfg.d_head**0.5
    p = x.shape[1]
    scores = scores.masked_fill(torch.ones(p, p, dtype=torch.bool).triu(1), float("-inf"))
    z = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
    return torch.einsum("bqhd,hdm->bqm", z, attn.W_O) + attn.b_O


def mlp_from_views(x: torch.Tensor, mlp, cfg) -> torch.Tensor:
    return ACT2FN[cfg.act_fn](x @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out


def logits_from_views(model: bridge.Bridge, tokens: torch.Tensor) -> torch.Tensor:
    cfg = model.cfg
    resid = model.W_E[tokens]
    if cfg.positional_embedding_type == "standard":
        resid = resid + model.W_pos[: tokens.shape[1]]
    for block in model.blocks:
        attn_out = attention_from_views(layer_norm(resid, block.ln1), block.attn, cfg)
        if cfg.parallel_attn_mlp:
            resid = resid + attn_out + mlp_from_views(layer_norm(resid, block.ln2), block.mlp, cfg)
        else:
            resid = resid + attn_out
            resid = resid + mlp_from_views(layer_norm(resid, block.ln2), block.mlp, cfg)
    return layer_norm(resid, model.ln_final) @ model.W_U + model.b_U


CONFIGS = {
    "gpt2": lambda: GPT2Adapter.example_config(),
    "neox-parallel-partial-rotary": lambda: GPTNeoXAdapter.example_config(),
    "neox-sequential": lambda: _with(GPTNeoXAdapter.example_config(), use_parallel_residual=False),
    "bigcode-mqa": lambda: GPTBigCodeAdapter.example_config(),
    "bigcode-mha": lambda: _with(GPTBigCodeAdapter.example_config(), multi_query=False),
}


def _with(config, **changes):
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_from_weight_views_reproduces_hf_logits(name):
    model = _wrapped(CONFIGS[name]())
    with torch.no_grad():
        expected = model.hf_model(TOKENS).logits
        got = logits_from_views(model, TOKENS)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_heads_times_W_O_sum_to_attn_out(name):
    model = _wrapped(CONFIGS[name]())
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS, names_filter=lambda n: n.endswith(("hook_z", "hook_attn_out")))
    for i, block in enumerate(model.blocks):
        heads = torch.einsum("bphd,hdm->bpm", cache["z", i], block.attn.W_O)
        torch.testing.assert_close(heads + block.attn.b_O, cache["attn_out", i], atol=1e-5, rtol=1e-5)


def test_mqa_keys_are_the_one_raw_head_repeated():
    model = _wrapped(GPTBigCodeAdapter.example_config())
    attn = model.blocks[0].attn
    assert attn._W_K.shape == (1, 32, 8) and attn.W_K.shape == (4, 32, 8)
    for h in range(4):
        torch.testing.assert_close(attn.W_K[h], attn._W_K[0])
        torch.testing.assert_close(attn.b_V[h], attn._b_V[0])
    # the raw key is the k-slice of HF's fused Conv1D-free c_attn (nn.Linear here): columns 32..40
    torch.testing.assert_close(attn._W_K[0], attn.hf.c_attn.weight[32:40].T)
