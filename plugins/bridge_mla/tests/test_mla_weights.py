"""MLA's weight views: the latent projections reproduce HF's attention layer (written here from the views, the
latent norms' parameters and the config), ``W_Q`` exists only without q-LoRA, and ``W_K``/``W_V`` say what
exists instead."""

from __future__ import annotations

import pytest
import torch

import bridge
from bridge.kernel.components.weight_views import WeightViewError
from bridge.testing import examples_of
from bridge.testing.reference import rms_norm, rotate, wrapped_with_random_biases
from bridge_mla import DeepseekV2Adapter, DeepseekV3Adapter

TOKENS = torch.tensor([[0, 5, 17, 42, 9, 77, 3, 11], [0, 8, 8, 100, 2, 64, 31, 7]])


def _wrapped(config) -> bridge.Bridge:
    return wrapped_with_random_biases(config, attn_implementation="eager")


def _input_and_output(module: torch.nn.Module, run) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states ``module`` is called with, and its first output, during ``run()``."""
    seen = {}

    def record_input(_m, args, kwargs):
        seen["in"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    def record_output(_m, _args, out):
        seen["out"] = out[0]

    handles = [
        module.register_forward_pre_hook(record_input, with_kwargs=True),
        module.register_forward_hook(record_output),
    ]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen["in"], seen["out"]


VARIANTS = {
    "v3-q-lora-halves": lambda: examples_of(DeepseekV3Adapter).example_config(
        rope_interleave=False, qk_nope_head_dim=16, v_head_dim=8
    ),
    "v3-q-lora-biases": lambda: examples_of(DeepseekV3Adapter).example_config(
        rope_interleave=False, attention_bias=True
    ),
    "v2-no-q-lora-pairs": lambda: examples_of(DeepseekV2Adapter).example_config(),
    "v2-q-lora-pairs": lambda: examples_of(DeepseekV2Adapter).example_config(q_lora_rank=24, v_head_dim=12),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_latent_views_reproduce_the_hf_attention_layer(name):
    config = VARIANTS[name]()
    model = _wrapped(config)
    attn = model.blocks[0].attn
    hf = attn.hf
    interleaved = config.model_type == "deepseek_v2"  # V2's complex rotary pairs neighbours
    with torch.no_grad():
        x, expected = _input_and_output(hf, lambda: model.hf_model(TOKENS))
        nope, rope = config.qk_nope_head_dim, config.qk_rope_head_dim
        if config.q_lora_rank is None:
            q = torch.einsum("bpm,hmd->bphd", x, attn.W_Q) + attn.b_Q
        else:
            q_latent = rms_norm(x @ attn.W_Q_a + attn.b_Q_a, hf.q_a_layernorm)  # [b, p, q_rank]
            q = torch.einsum("bpr,hrd->bphd", q_latent, attn.W_Q_b)  # [b, p, h, nope + rope]
        latent = rms_norm(x @ attn.W_KV_a + attn.b_KV_a, hf.kv_a_layernorm)  # [b, p, kv_rank]
        k_nope = torch.einsum("bpr,hrd->bphd", latent, attn.W_K_b)
        v = torch.einsum("bpr,hrd->bphd", latent, attn.W_V_b)
        theta = config.rope_parameters["rope_theta"]
        q = torch.cat([q[..., :nope], rotate(q[..., nope:], theta, interleaved=interleaved)], dim=-1)
        k_rope = rotate(
            x @ attn.W_K_rope + attn.b_K_rope, theta, interleaved=interleaved
        )  # [b, p, rope], shared by heads
        k = torch.cat([k_nope, k_rope[:, :, None].expand(-1, -1, config.num_attention_heads, -1)], dim=-1)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * (nope + rope) ** -0.5
        p = x.shape[1]
        scores = scores.masked_fill(torch.ones(p, p, dtype=torch.bool).triu(1), float("-inf"))
        z = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
        got = torch.einsum("bqhd,hdm->bqm", z, attn.W_O) + attn.b_O
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    h, d_v = config.num_attention_heads, config.v_head_dim
    assert attn.W_O.shape == (h, d_v, config.hidden_size) and model.W_O.shape == (2, h, d_v, config.hidden_size)


def test_W_Q_without_q_lora_is_q_proj_per_head():
    model = _wrapped(examples_of(DeepseekV2Adapter).example_config())
    attn = model.blocks[1].attn
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = attn.hf.q_proj(x).reshape(2, 5, 4, 16)
        torch.testing.assert_close(torch.einsum("bpm,hmd->bphd", x, attn.W_Q) + attn.b_Q, expected)
    assert model.W_Q.shape == (2, 4, 32, 16)
    with pytest.raises(WeightViewError, match="no q-LoRA"):
        _ = attn.W_Q_a


def test_missing_mla_views_say_what_exists():
    model = _wrapped(examples_of(DeepseekV3Adapter).example_config())
    attn = model.blocks[0].attn
    for name in ("W_K", "W_V", "b_K", "_W_V", "OV"):
        assert not hasattr(attn, name), name
    with pytest.raises(AttributeError, match=r"no linear W_K\. Its linear maps are W_Q_a, W_Q_b, W_KV_a"):
        _ = attn.W_K
    with pytest.raises(WeightViewError, match=r"q-LoRA.*W_Q_a"):
        _ = model.W_Q
    with pytest.raises(WeightViewError, match="no linear W_V"):
        _ = model.W_V
    with pytest.raises(WeightViewError, match="mixture-of-experts"):
        _ = model.W_in  # layer 1 is MoE
    assert model.blocks[0].mlp.W_in.shape == (32, 64)  # the dense first layer
    assert model.blocks[1].mlp.W_in.shape == (8, 32, 16)  # per expert
    assert model.blocks[1].mlp.shared_experts.W_out.shape == (16, 32)
