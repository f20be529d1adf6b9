"""Effective attention: the mixer's SSM as a lower-triangular matrix that reproduces ``hook_y``."""

import einops
import pytest
import torch

from bridge import ActivationCache, BridgeError
from bridge_mamba import Mamba2Adapter, MambaAdapter, effective_attention


def _enlarge_dt(model) -> None:
    """Initial Δ is 0.001-0.1, which leaves the scan a small share of ``hook_y``; Δ ≈ 1.3 makes it count."""
    with torch.no_grad():
        for block in model.blocks:
            m = block.mixer.hf
            (m.dt_proj.bias if hasattr(m, "dt_proj") else m.dt_bias).fill_(1.0)


@pytest.mark.parametrize("pos", [1, 7, 16])
@pytest.mark.parametrize("adapter", [MambaAdapter, Mamba2Adapter])
def test_effective_attention_reconstructs_ssm_out(pair_for, adapter, pos, reconstruct_ssm_out):
    pair = pair_for(adapter)
    model = pair.bridge
    _enlarge_dt(model)
    _, cache = model.run_with_cache(pair.tokens(2, pos), names_filter=lambda n: ".mixer." in n)
    for layer in range(model.cfg.n_layers):
        M = effective_attention(cache, layer, model)
        m = model.blocks[layer].mixer.hf
        heads = m.intermediate_size if adapter is MambaAdapter else m.num_heads
        assert M.shape == (2, heads, pos, pos)
        assert torch.all(M.triu(1) == 0), "effective attention is not causal"
        y = cache[f"blocks.{layer}.mixer.hook_y"]
        torch.testing.assert_close(reconstruct_ssm_out(model, cache, layer, M), y, atol=1e-4, rtol=0)
        scan_part = y - reconstruct_ssm_out(model, cache, layer, torch.zeros_like(M))  # y - D·x
        if pos >= 7:  # from a single position the scan's share is tiny; longer ones make the check sharp
            assert scan_part.abs().max() > 0.05, "the scan barely contributes: the check would be weak"


def test_mamba2_effective_attention_is_shared_within_a_head_and_group(pair_for):
    """Per head: one scalar decay and one B/C group per head, so heads of a group differ only by Δ and A."""
    pair = pair_for(Mamba2Adapter)
    model = pair.bridge
    _, cache = model.run_with_cache(pair.tokens(1, 6), names_filter=lambda n: n.startswith("blocks.0.mixer."))
    M = effective_attention(cache, 0, model)
    m = model.blocks[0].mixer.hf
    dt = cache["blocks.0.mixer.hook_dt"]  # [b, p, h]
    diagonal = einops.einsum(
        cache["blocks.0.mixer.hook_C"], cache["blocks.0.mixer.hook_B"], "b p g n, b p g n -> b g p"
    )
    diagonal = diagonal.repeat_interleave(m.num_heads // m.n_groups, dim=1) * einops.rearrange(dt, "b p h -> b h p")
    torch.testing.assert_close(torch.diagonal(M, dim1=-2, dim2=-1), diagonal, atol=1e-6, rtol=1e-5)


def test_effective_attention_names_the_hooks_it_needs(pair_for):
    pair = pair_for(Mamba2Adapter)
    model = pair.bridge
    _, cache = model.run_with_cache(pair.tokens(1, 4), names_filter="blocks.0.mixer.hook_dt")
    with pytest.raises(BridgeError, match="hook_B"):
        effective_attention(cache, 0, model)


def test_effective_attention_uses_the_model_a_cache_keeps(pair_for):
    pair = pair_for(MambaAdapter)
    model = pair.bridge
    _, cache = model.run_with_cache(pair.tokens(1, 5), names_filter=lambda n: n.startswith("blocks.1.mixer."))
    bare = ActivationCache(cache.as_dict(), n_layers=model.cfg.n_layers)
    with pytest.raises(BridgeError, match="pass the bridge"):
        effective_attention(bare, 1)
    bare.model = model  # as a cache that records its model does
    torch.testing.assert_close(effective_attention(bare, 1), effective_attention(cache, 1, model))
