"""``Block.residual_scale`` (sublayer outputs scaled before they are added, Granite) as the kit and the cache
analysis read it, and ``Norm(eps=...)`` for HF norms that hard-code their epsilon (OLMo)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bridge.analysis.residual import block_layout
from bridge.kernel.components import Norm
from bridge.kernel.config import BridgeConfig
from bridge.testing import ConformanceError, check_gradients, check_residual_algebra, make_pair
from bridge_llama import GraniteAdapter, ScaledResidualBlock


class UndeclaredScaleBlock(ScaledResidualBlock):
    """Scales the sublayer outputs as Granite does but leaves ``residual_scale`` at 1 (an author's slip)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scale = self.residual_scale
        self.residual_scale = 1.0

    def run_attention(self, x, call_kwargs):
        out, weights = super(ScaledResidualBlock, self).run_attention(x, call_kwargs)
        return out * self.scale, weights

    def run_mlp(self, x):
        return super(ScaledResidualBlock, self).run_mlp(x) * self.scale


class UndeclaredScaleGranite(GraniteAdapter):
    wiring = UndeclaredScaleBlock


@pytest.fixture(scope="module")
def granite_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("granite")


def test_kit_scales_the_reference_sublayer_by_the_declared_residual_scale(granite_dir):
    pair = make_pair(GraniteAdapter, directory=granite_dir)
    assert pair.bridge.blocks[0].residual_scale == pair.bridge.hf_model.config.residual_multiplier != 1.0
    check_residual_algebra(pair)
    check_gradients(pair)


def test_kit_catches_a_scaled_block_that_does_not_declare_its_scale(granite_dir):
    pair = make_pair(UndeclaredScaleGranite, "GraniteForCausalLM", directory=granite_dir)
    with pytest.raises(ConformanceError, match=r"blocks\.0\.hook_mlp_out vs HF's MLP on patched hook_resid_mid"):
        check_residual_algebra(pair)
    with pytest.raises(ConformanceError, match=r"gradient at blocks\.0\.hook_resid_mid"):
        check_gradients(pair)


def test_cache_analysis_does_not_split_a_scaled_write(granite_dir):
    layout = block_layout(make_pair(GraniteAdapter, directory=granite_dir).bridge.blocks[1], 1)
    assert not layout.heads_write and not layout.neurons_write
    assert "scales its attn output by 0.22 (residual_scale)" in layout.why_not["attn"]
    assert layout.writes == ("attn_out", "mlp_out")


class FixedEpsLayerNorm(torch.nn.Module):
    """A layer norm without parameters whose epsilon lives in its code only (as OLMo's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], None, None, eps=1e-3)


def test_norm_takes_an_epsilon_the_hf_module_does_not_hold():
    cfg = BridgeConfig(n_layers=1, d_model=8, n_heads=1, d_vocab=4)
    module = FixedEpsLayerNorm()
    with pytest.raises(AttributeError, match="cannot find the epsilon of FixedEpsLayerNorm"):
        Norm(module, cfg, kind="LN")
    norm = Norm(module, cfg, kind="LN", eps=1e-3)
    x = 0.03 * torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0))  # variance ~ eps: eps matters
    expected = module(x)
    norm.hook_scale.add_hook(lambda t, hook: t.clone())  # a changed tensor: the re-expression's own output
    try:
        torch.testing.assert_close(module(x), expected, atol=1e-6, rtol=0)
    finally:
        norm.hook_scale.remove_hooks()
    wrong = Norm(FixedEpsLayerNorm(), cfg, kind="LN", eps=1e-5)
    wrong.hook_scale.add_hook(lambda t, hook: t.clone())
    assert not torch.allclose(wrong.hf(x), expected, atol=1e-3)


def test_cache_analysis_does_not_split_a_write_with_a_result_scale(granite_dir):
    """``Block.result_scales``: a factor on one sublayer's results (Falcon-H1's multipliers after ``o_proj`` and
    ``down_proj``) refuses that sublayer's heads or neurons only, naming the factor."""
    block = make_pair(GraniteAdapter, directory=granite_dir).bridge.blocks[1]
    block.residual_scale = 1.0
    assert block_layout(block, 1).heads_write
    block.result_scales = {"attn": 0.5}
    layout = block_layout(block, 1)
    assert not layout.heads_write and layout.neurons_write
    assert "scales its attn output by 0.5 (result_scales)" in layout.why_not["attn"]


def test_cache_analysis_does_not_split_a_sublayer_outside_the_stream(granite_dir):
    """A sublayer whose write hook is not among the block's residual writes (its ``algebra``: Zamba2's shared
    attention feeds its Mamba layer) has no heads or neurons in the stream."""
    block = make_pair(GraniteAdapter, directory=granite_dir).bridge.blocks[1]
    block.residual_scale = 1.0
    block.algebra = (("hook_resid_post", ("hook_resid_pre", "hook_mlp_out")),)
    layout = block_layout(block, 1)
    assert not layout.heads_write and layout.neurons_write
    assert "block 1's attention does not write to the residual stream" in layout.why_not["attn"]
