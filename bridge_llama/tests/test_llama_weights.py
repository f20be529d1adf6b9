"""Weight views of the RoPE family, checked by a forward pass written here from nothing but the views, the
norm parameters and the config (rotary, GQA, q/k norms, sliding windows, soft-caps, sandwich norms, Gemma's ``1 + w``
norms and embedding scale), against HF's logits; MoE per-expert views against HF's MoE block."""

from __future__ import annotations

import pytest
import torch
from transformers.activations import ACT2FN

import bridge
from bridge.kernel.components.weight_views import WeightViewError
from bridge.testing import examples_of
from bridge.testing.reference import (
    REFERENCE_TOKENS,
    attention_output,
    causal_attention,
    project,
    rms_norm,
    rotate,
    wrapped_with_random_biases,
)
from bridge_llama import (
    Gemma2Adapter,
    Gemma3Adapter,
    LlamaAdapter,
    MistralAdapter,
    MixtralAdapter,
    Olmo2Adapter,
    Phi3Adapter,
    Qwen2Adapter,
    Qwen3Adapter,
)


def _wrapped(config) -> bridge.Bridge:
    return wrapped_with_random_biases(config, attn_implementation="eager")


def window_of(cfg, layer: int) -> int | None:
    window, types = cfg.extra.get("sliding_window"), cfg.extra.get("layer_types")
    if types is None:
        return window
    return window if types[layer] == "sliding_attention" else None


def qk_norm(x: torch.Tensor, module: torch.nn.Module, cfg) -> torch.Tensor:
    """The q/k norm of Qwen3 (per head), Gemma 3 (per head, ``1 + w``) or OLMo-2 (across heads): ``[b, p, n, d]``."""
    eps = getattr(module, "variance_epsilon", None) or module.eps
    if cfg.model_type == "olmo2":
        flat = x.flatten(-2)
        return (flat / (flat.pow(2).mean(-1, keepdim=True) + eps).sqrt() * module.weight).unflatten(-1, x.shape[-2:])
    weight = 1 + module.weight if cfg.model_type == "gemma3_text" else module.weight
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * weight


def attention_from_views(x: torch.Tensor, attn, cfg, layer: int) -> torch.Tensor:
    q = project(x, attn.W_Q, attn.b_Q)
    k = project(x, attn._W_K, attn._b_K)  # raw kv heads: OLMo-2 normalises them together
    v = project(x, attn.W_V, attn.b_V)  # GQA: already expanded to n_heads
    if hasattr(attn.hf, "q_norm"):
        q, k = qk_norm(q, attn.hf.q_norm, cfg), qk_norm(k, attn.hf.k_norm, cfg)
    k = k.repeat_interleave(cfg.n_heads // cfg.n_key_value_heads, dim=2)
    theta = cfg.extra["rope_theta"]
    if window_of(cfg, layer) is not None and cfg.extra.get("rope_theta_local"):
        theta = cfg.extra["rope_theta_local"]  # Gemma 3's sliding layers
    q, k = rotate(q, theta, cfg.rotary_dim), rotate(k, theta, cfg.rotary_dim)
    scale = (cfg.extra.get("query_pre_attn_scalar") or cfg.d_head) ** -0.5
    softcap = cfg.extra.get("attn_logit_softcapping")
    return attention_output(causal_attention(q, k, v, scale, window=window_of(cfg, layer), softcap=softcap), attn)


def mlp_from_views(x: torch.Tensor, mlp, cfg) -> torch.Tensor:
    post = ACT2FN[cfg.act_fn](x @ mlp.W_gate + mlp.b_gate) * (x @ mlp.W_in + mlp.b_in)
    return post @ mlp.W_out + mlp.b_out


def logits_from_views(model: bridge.Bridge, tokens: torch.Tensor) -> torch.Tensor:
    cfg = model.cfg
    resid = model.W_E[tokens] * cfg.extra.get("embed_scale", 1.0)

    def norm(block, name, x):
        if not hasattr(block, name):
            return x
        return rms_norm(x, getattr(block, name).hf, getattr(block, name).weight_offset)

    for layer, block in enumerate(model.blocks):
        attn_out = norm(block, "ln1_post", attention_from_views(norm(block, "ln1", resid), block.attn, cfg, layer))
        resid = resid + attn_out
        resid = resid + norm(block, "ln2_post", mlp_from_views(norm(block, "ln2", resid), block.mlp, cfg))
    logits = rms_norm(resid, model.ln_final.hf, model.ln_final.weight_offset) @ model.W_U + model.b_U
    softcap = cfg.extra.get("final_logit_softcapping")
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def _config(adapter, **changes):
    config = examples_of(adapter).example_config()
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
    "qwen3-qk-norm": lambda: _config(Qwen3Adapter),
    "gemma3-qk-norm-local-rope": lambda: _config(Gemma3Adapter),
    "olmo2-post-norms-only": lambda: _config(Olmo2Adapter),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_from_weight_views_reproduces_hf_logits(name):
    model = _wrapped(CONFIGS[name]())
    with torch.no_grad():
        expected = model.hf_model(REFERENCE_TOKENS).logits
        got = logits_from_views(model, REFERENCE_TOKENS)
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
        _, cache = model.run_with_cache(REFERENCE_TOKENS, names_filter=lambda n: n.endswith("hook_z"))
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
