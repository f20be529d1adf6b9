"""Weight views of the RoPE family, checked by a forward pass written here from nothing but the views, the
norm parameters and the config (rotary, GQA, sliding windows, soft-caps, sandwich norms, Gemma's ``1 + w``
norms and embedding scale), against HF's logits; MoE per-expert views against HF's MoE block."""

from __future__ import annotations

import pytest
import torch
from transformers.activations import ACT2FN

import bridge
from bridge.components.weight_views import WeightViewError
from bridge.testing.fixtures import build_tiny_model, tiny_tokenizer
from bridge_llama import Gemma2Adapter, LlamaAdapter, MistralAdapter, MixtralAdapter, Phi3Adapter, Qwen2Adapter

TOKENS = torch.tensor([[0, 5, 17, 42, 9, 77, 3, 11, 64, 2], [0, 8, 8, 100, 2, 64, 31, 7, 7, 120]])


def _wrapped(config) -> bridge.Bridge:
    hf_model = build_tiny_model(config, attn_implementation="eager")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random biases and norm weights: a misplaced one must show
        for param in hf_model.parameters():
            if param.ndim == 1:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return bridge.wrap(hf_model, tiny_tokenizer())


def rms_norm(x: torch.Tensor, norm) -> torch.Tensor:
    return x / (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt() * (norm.weight_offset + norm.hf.weight)


def rotate(x: torch.Tensor, rotary_dim: int, theta: float) -> torch.Tensor:
    """Rotary on the first ``rotary_dim`` features of each head, halves paired: ``x`` ``[b, p, h, d]``."""
    positions = torch.arange(x.shape[1], dtype=torch.float32)
    inv_freq = theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim)
    angles = positions[:, None] * inv_freq[None, :]  # [p, rotary_dim / 2]
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    first, second = rot.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, second * cos + first * sin, rest], dim=-1)


def window_of(cfg, layer: int) -> int | None:
    window, types = cfg.extra.get("sliding_window"), cfg.extra.get("layer_types")
    if types is None:
        return window
    return window if types[layer] == "sliding_attention" else None


def attention_from_views(x: torch.Tensor, attn, cfg, layer: int) -> torch.Tensor:
    q = torch.einsum("bpm,hmd->bphd", x, attn.W_Q) + attn.b_Q
    k = torch.einsum("bpm,hmd->bphd", x, attn.W_K) + attn.b_K  # GQA: already expanded to n_heads
    v = torch.einsum("bpm,hmd->bphd", x, attn.W_V) + attn.b_V
    theta = cfg.extra["rope_theta"]
    q, k = rotate(q, cfg.rotary_dim, theta), rotate(k, cfg.rotary_dim, theta)
    scale = (cfg.extra.get("query_pre_attn_scalar") or cfg.d_head) ** -0.5
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    softcap = cfg.extra.get("attn_logit_softcapping")
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    p = x.shape[1]
    query, key = torch.arange(p)[:, None], torch.arange(p)[None, :]
    masked = key > query
    window = window_of(cfg, layer)
    if window is not None:
        masked = masked | (query - key >= window)
    z = torch.einsum("bhqk,bkhd->bqhd", scores.masked_fill(masked, float("-inf")).softmax(-1), v)
    return torch.einsum("bqhd,hdm->bqm", z, attn.W_O) + attn.b_O


def mlp_from_views(x: torch.Tensor, mlp, cfg) -> torch.Tensor:
    post = ACT2FN[cfg.act_fn](x @ mlp.W_gate + mlp.b_gate) * (x @ mlp.W_in + mlp.b_in)
    return post @ mlp.W_out + mlp.b_out


def logits_from_views(model: bridge.Bridge, tokens: torch.Tensor) -> torch.Tensor:
    cfg = model.cfg
    resid = model.W_E[tokens] * cfg.extra.get("embed_scale", 1.0)

    def norm(block, name, x):
        return rms_norm(x, getattr(block, name)) if hasattr(block, name) else x

    for layer, block in enumerate(model.blocks):
        attn_out = norm(block, "ln1_post", attention_from_views(norm(block, "ln1", resid), block.attn, cfg, layer))
        resid = resid + attn_out
        resid = resid + norm(block, "ln2_post", mlp_from_views(norm(block, "ln2", resid), block.mlp, cfg))
    logits = rms_norm(resid, model.ln_final) @ model.W_U + model.b_U
    softcap = cfg.extra.get("final_logit_softcapping")
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def _config(adapter, **changes):
    config = adapter.example_config()
    for key, value in changes.items():
        setattr(config, key, value)
    return config


CONFIGS = {
    "llama-gqa": lambda: _config(LlamaAdapter),
    "llama-biases": lambda: _config(LlamaAdapter, attention_bias=True, mlp_bias=True),
    "mistral-sliding": lambda: _config(MistralAdapter),
    "qwen2-qkv-bias": lambda: _config(Qwen2Adapter),
    "gemma2-sandwich-softcap": lambda: _config(Gemma2Adapter),
    "phi3-fused": lambda: _config(Phi3Adapter),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_from_weight_views_reproduces_hf_logits(name):
    model = _wrapped(CONFIGS[name]())
    with torch.no_grad():
        expected = model.hf_model(TOKENS).logits
        got = logits_from_views(model, TOKENS)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["llama-gqa", "gemma2-sandwich-softcap", "phi3-fused"])
def test_heads_times_W_O_sum_to_the_output_projection(name):
    """``Σ_h z_h @ W_O[h] + b_O`` is ``o_proj``'s output (for sandwich blocks, before the post-norm)."""
    model = _wrapped(CONFIGS[name]())
    seen = {}
    handles = [
        block.attn.hf.o_proj.register_forward_hook(lambda _m, _a, out, i=i: seen.__setitem__(i, out))
        for i, block in enumerate(model.blocks)
    ]
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS, names_filter=lambda n: n.endswith("hook_z"))
    for handle in handles:
        handle.remove()
    for i, block in enumerate(model.blocks):
        heads = torch.einsum("bphd,hdm->bpm", cache["z", i], block.attn.W_O)
        torch.testing.assert_close(heads + block.attn.b_O, seen[i], atol=1e-5, rtol=1e-5)


def test_gqa_expanded_head_h_is_raw_head_h_over_group():
    model = _wrapped(_config(Qwen2Adapter))
    attn = model.blocks[1].attn
    group = model.cfg.n_heads // model.cfg.n_key_value_heads
    assert group == 2 and attn._W_K.shape[0] == 2
    for h in range(model.cfg.n_heads):
        torch.testing.assert_close(attn.W_K[h], attn._W_K[h // group])
        torch.testing.assert_close(attn.W_V[h], attn._W_V[h // group])
        torch.testing.assert_close(attn.b_K[h], attn._b_K[h // group])
        torch.testing.assert_close(attn.b_V[h], attn._b_V[h // group])
    torch.testing.assert_close(model._W_K[1], attn._W_K)
    # the raw view is the HF projection itself: k_proj.weight rows of kv head 1
    d = model.cfg.d_head
    torch.testing.assert_close(attn._W_K[1], attn.hf.k_proj.weight[d : 2 * d].T)


def test_moe_per_expert_views_reproduce_the_hf_moe_block():
    model = _wrapped(_config(MixtralAdapter))
    mlp = model.blocks[0].mlp
    n_experts, k = model.cfg.extra["n_experts"], model.cfg.extra["experts_per_token"]
    assert mlp.W_in.shape == (n_experts, 64, 96) and mlp.W_out.shape == (n_experts, 96, 64)
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = mlp.hf(x)
        expected = expected[0] if isinstance(expected, tuple) else expected
        top, chosen = torch.topk((x @ mlp.W_router).softmax(-1), k, dim=-1)  # [b, p, k]
        top = top / top.sum(-1, keepdim=True)
        act = ACT2FN[model.cfg.act_fn]
        per_expert = torch.stack(
            [
                (act(x @ mlp.W_gate[e] + mlp.b_gate[e]) * (x @ mlp.W_in[e] + mlp.b_in[e])) @ mlp.W_out[e] + mlp.b_out[e]
                for e in range(n_experts)
            ],
            dim=2,
        )  # [b, p, n_experts, d_model]
        weights = torch.zeros(2, 7, n_experts).scatter(-1, chosen, top)
        got = torch.einsum("bpe,bped->bpd", weights, per_expert)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not hasattr(model, "W_in")
    with pytest.raises(WeightViewError, match=r"mixture-of-experts.*blocks\[i\]\.mlp\.W_in"):
        _ = model.W_in
    assert model.W_O.shape == (2, 4, 16, 64)  # attention views are unaffected
