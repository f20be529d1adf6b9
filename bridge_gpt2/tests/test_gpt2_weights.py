"""Weight views of the fused-QKV family (GPT-2 grouped, NeoX per-head, BigCode MQA and MHA, Conv1D and
``nn.Linear``), checked by a forward pass written here from nothing but the views, the norm parameters
and the config, against HF's logits."""

from __future__ import annotations

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
from bridge_gpt2 import GPT2Adapter, GPTBigCodeAdapter, GPTNeoXAdapter


def attention_from_views(x: torch.Tensor, attn, cfg) -> torch.Tensor:
    """``x`` ``[b, p, d_model]`` through one layer's views: causal softmax attention, ``Σ_h z_h W_O[h] + b_O``."""
    q, k, v = project(x, attn.W_Q, attn.b_Q), project(x, attn.W_K, attn.b_K), project(x, attn.W_V, attn.b_V)
    if cfg.positional_embedding_type == "rotary":
        theta = cfg.extra["rope_theta"]
        q, k = rotate(q, theta, cfg.rotary_dim), rotate(k, theta, cfg.rotary_dim)
    return attention_output(causal_attention(q, k, v, scale=cfg.d_head**-0.5), attn)


def mlp_from_views(x: torch.Tensor, mlp, cfg) -> torch.Tensor:
    return ACT2FN[cfg.act_fn](x @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out


def logits_from_views(model: bridge.Bridge, tokens: torch.Tensor) -> torch.Tensor:
    cfg = model.cfg
    resid = model.W_E[tokens]
    if cfg.positional_embedding_type == "standard":
        resid = resid + model.W_pos[: tokens.shape[1]]
    for block in model.blocks:
        attn_out = attention_from_views(layer_norm(resid, block.ln1.hf), block.attn, cfg)
        if cfg.parallel_attn_mlp:
            resid = resid + attn_out + mlp_from_views(layer_norm(resid, block.ln2.hf), block.mlp, cfg)
        else:
            resid = resid + attn_out
            resid = resid + mlp_from_views(layer_norm(resid, block.ln2.hf), block.mlp, cfg)
    return layer_norm(resid, model.ln_final.hf) @ model.W_U + model.b_U


CONFIGS = {
    "gpt2": lambda: examples_of(GPT2Adapter).example_config(),
    "neox-parallel-partial-rotary": lambda: examples_of(GPTNeoXAdapter).example_config(),
    "neox-sequential": lambda: _with(examples_of(GPTNeoXAdapter).example_config(), use_parallel_residual=False),
    "bigcode-mqa": lambda: examples_of(GPTBigCodeAdapter).example_config(),
    "bigcode-mha": lambda: _with(examples_of(GPTBigCodeAdapter).example_config(), multi_query=False),
}


def _with(config, **changes):
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_from_weight_views_reproduces_hf_logits(name):
    model = wrapped_with_random_biases(CONFIGS[name]())
    with torch.no_grad():
        expected = model.hf_model(REFERENCE_TOKENS).logits
        got = logits_from_views(model, REFERENCE_TOKENS)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_heads_times_W_O_sum_to_attn_out(name):
    model = wrapped_with_random_biases(CONFIGS[name]())
    with torch.no_grad():
        _, cache = model.run_with_cache(
            REFERENCE_TOKENS, names_filter=lambda n: n.endswith(("hook_z", "hook_attn_out"))
        )
    for i, block in enumerate(model.blocks):
        heads = torch.einsum("bphd,hdm->bpm", cache["z", i], block.attn.W_O)
        torch.testing.assert_close(heads + block.attn.b_O, cache["attn_out", i], atol=1e-5, rtol=1e-5)


def test_mqa_keys_are_the_one_raw_head_repeated():
    model = wrapped_with_random_biases(examples_of(GPTBigCodeAdapter).example_config())
    attn = model.blocks[0].attn
    assert attn._W_K.shape == (1, 32, 8) and attn.W_K.shape == (4, 32, 8)
    for h in range(4):
        torch.testing.assert_close(attn.W_K[h], attn._W_K[0])
        torch.testing.assert_close(attn.b_V[h], attn._b_V[0])
    # the raw key is the k-slice of HF's fused Conv1D-free c_attn (nn.Linear here): columns 32..40
    torch.testing.assert_close(attn._W_K[0], attn.hf.c_attn.weight[32:40].T)
