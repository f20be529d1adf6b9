"""Attention sinks (``s_aux``) on the seam's eager path, against HF's own eager sink attention (GPT-OSS's modeling
file) on random shapes, GQA groupings, masks and dtypes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward as hf_sink_attention

from bridge.kernel.seam import eager_attention


class SinkModule(nn.Module):
    """What HF's eager sink attention reads off its module: the sinks and the GQA grouping."""

    def __init__(self, n_heads: int, n_kv_heads: int, generator: torch.Generator, dtype: torch.dtype) -> None:
        super().__init__()
        self.sinks = nn.Parameter(torch.randn(n_heads, generator=generator).to(dtype))
        self.num_key_value_groups = n_heads // n_kv_heads
        self.is_causal = True


def inputs(b, n_kv, groups, q_len, cached, d, padding, dtype, seed):
    """Random q/k/v and an additive causal mask with left padding on sequence 0 (``cached`` earlier keys)."""
    generator = torch.Generator().manual_seed(seed)
    n_heads, k_len = n_kv * groups, cached + q_len
    query = torch.randn(b, n_heads, q_len, d, generator=generator).to(dtype)
    key = torch.randn(b, n_kv, k_len, d, generator=generator).to(dtype)
    value = torch.randn(b, n_kv, k_len, d, generator=generator).to(dtype)
    allowed = torch.ones(q_len, k_len, dtype=torch.bool).tril(cached)[None, None].repeat(b, 1, 1, 1)
    allowed[0, :, :, : min(padding, k_len - 1)] = False  # padding: never a whole row
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return SinkModule(n_heads, n_kv, generator, dtype), query, key, value, mask


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 3),
    n_kv=st.integers(1, 3),
    groups=st.sampled_from([1, 2, 4]),
    q_len=st.integers(1, 6),
    cached=st.integers(0, 4),
    padding=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_eager_sinks_equal_hfs_sink_attention(b, n_kv, groups, q_len, cached, padding, seed):
    module, query, key, value, mask = inputs(b, n_kv, groups, q_len, cached, 8, padding, torch.float32, seed)
    expected_out, expected_weights = hf_sink_attention(module, query, key, value, mask, scaling=0.3)
    seen = {}
    out, weights = eager_attention(
        module, query, key, value, mask, scaling=0.3, s_aux=module.sinks,
        on_sinks=lambda s: seen.setdefault("sinks", s), on_pattern=lambda p: seen.setdefault("pattern", p),
    )  # fmt: skip
    torch.testing.assert_close(out, expected_out, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=0)
    assert seen["sinks"].shape == (b, q_len, n_kv * groups)  # [b, q, h]
    torch.testing.assert_close(seen["sinks"], module.sinks.detach().expand(b, q_len, -1))
    assert seen["pattern"].shape == (b, n_kv * groups, q_len, cached + q_len)
    assert (seen["pattern"].sum(-1) < 1).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_eager_sinks_follow_hfs_numerics_in_half_precision(dtype):
    """HF's sink softmax runs in the scores' dtype after subtracting the row maximum: bit for bit the same here."""
    module, query, key, value, mask = inputs(2, 2, 2, 5, 3, 16, 2, dtype, seed=3)
    expected_out, expected_weights = hf_sink_attention(module, query, key, value, mask, scaling=0.25)
    out, weights = eager_attention(module, query, key, value, mask, scaling=0.25, s_aux=module.sinks)
    assert out.dtype == dtype and torch.equal(out, expected_out) and torch.equal(weights, expected_weights)


def test_a_sink_patched_to_minus_infinity_is_plain_attention():
    """Setting every sink logit to -inf through ``on_sinks`` gives the sink-free eager attention (rows sum to 1)."""
    module, query, key, value, mask = inputs(2, 1, 4, 4, 2, 8, 1, torch.float32, seed=5)
    plain, plain_weights = eager_attention(module, query, key, value, mask)
    out, weights = eager_attention(
        module, query, key, value, mask, s_aux=module.sinks, on_sinks=lambda s: torch.full_like(s, float("-inf"))
    )
    torch.testing.assert_close(out, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights, plain_weights, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert not torch.allclose(eager_attention(module, query, key, value, mask, s_aux=module.sinks)[0], plain)
