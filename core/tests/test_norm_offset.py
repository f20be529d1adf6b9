"""``Norm(kind="LN", weight_offset=1)``: a layer norm that stores its weight zero-centred and applies ``w + 1``
(Nemotron's ``LayerNorm1P``), re-expressed exactly once a hook changes a tensor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bridge.kernel.components import Norm
from bridge.kernel.config import BridgeConfig

CFG = BridgeConfig(n_layers=1, d_model=8, n_heads=1, d_vocab=4)


class LayerNorm1P(torch.nn.LayerNorm):
    """An independent reference: ``layer_norm(x, w + 1, b)``, written as Nemotron's module computes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight + 1.0, self.bias, self.eps)


def _module() -> LayerNorm1P:
    module = LayerNorm1P(8, eps=1e-5)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        module.weight.copy_(0.3 * torch.randn(8, generator=generator))  # zero-centred, as stored
        module.bias.copy_(0.2 * torch.randn(8, generator=generator))
    return module


def _inputs() -> torch.Tensor:
    return torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("offset", [1.0, 0.0])
def test_layer_norm_reexpression_applies_the_weight_offset(offset: float) -> None:
    module, x = _module(), _inputs()
    expected = module(x)
    norm = Norm(module, CFG, kind="LN", weight_offset=offset)
    norm.hook_scale.add_hook(lambda t, hook: t.clone())  # a changed tensor: the re-expression's own output
    try:
        got = module(x)
    finally:
        norm.hook_scale.remove_hooks()
    if offset:  # fp32 layer norm of 8 features: round-off ~1e-7
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    else:  # the offset ignored (the bug this option fixes) is far off
        assert (got - expected).abs().max() > 0.1


def test_patched_normalized_is_scaled_by_weight_plus_offset() -> None:
    module, x = _module(), _inputs()
    norm = Norm(module, CFG, kind="LN", weight_offset=1.0)
    patch = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(2))
    norm.hook_normalized.add_hook(lambda t, hook: patch)
    try:
        got = module(x)
    finally:
        norm.hook_normalized.remove_hooks()
    expected = patch * (module.weight.detach() + 1.0) + module.bias.detach()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_observing_hooks_leave_the_module_output_bit_for_bit() -> None:
    module, x = _module().to(torch.bfloat16), _inputs().to(torch.bfloat16)
    expected = module(x)
    norm = Norm(module, CFG, kind="LN", weight_offset=1.0)
    seen: list[torch.Tensor] = []
    norm.hook_scale.add_hook(lambda t, hook: seen.append(t) and None)
    try:
        got = module(x)
    finally:
        norm.hook_scale.remove_hooks()
    assert seen and torch.equal(got, expected)
