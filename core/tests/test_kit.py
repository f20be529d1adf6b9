"""The conformance kit catches the mistakes adapter authors make, and the house rules it relies on hold."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bridge.kernel import known
from bridge.kernel.adapter import Spec
from bridge.kernel.components import MLP, OutputTap
from bridge.kernel.plugins import canonical, get_registry
from bridge.testing import (
    ConformanceError,
    check_every_hook_matters,
    check_implied_hooks,
    check_shapes,
    expect_close,
    make_pair,
)
from bridge.testing.compare import max_diff
from bridge_gpt2 import GPT2Adapter
from bridge_llama import LlamaAdapter


class NoPositionsGPT2(GPT2Adapter):
    """A GPT-2 adapter that leaves out the learned position table."""

    def component_map(self, cfg):
        return replace(super().component_map(cfg), pos_embed=None)


def _with_child(cmap, name: str, spec: Spec):
    return replace(cmap, block=replace(cmap.block, children={**cmap.block.children, name: spec}))


class NoRotaryLlama(LlamaAdapter):
    """A Llama adapter that forgot ``rotary=True``."""

    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        attn = cmap.block.children["attn"]
        return _with_child(cmap, "attn", replace(attn, options={**attn.options, "rotary": False}))


class FlatMLP(MLP):
    """An MLP whose ``hook_pre`` fires on ``[b·p, d_mlp]`` (a module run on flattened positions)."""

    def __init__(self, hf_module, cfg, **options):
        super().__init__(hf_module, cfg, **options)
        self._attachments = [a for a in self._attachments if self.hook_pre not in a.hooks]
        hook = self.hook_pre
        hook._listeners.clear()
        pre = hf_module.get_submodule(self.paths["pre"])
        self.attach(OutputTap(pre, lambda y: hook(y.flatten(0, -2)).view_as(y), (hook,)))


class FlatMLPGPT2(GPT2Adapter):
    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        return _with_child(cmap, "mlp", replace(cmap.block.children["mlp"], kind=FlatMLP))


def _pair(adapter, base, tmp_path):
    return make_pair(adapter, base.architectures[0], directory=tmp_path)


def test_kit_catches_a_missing_pos_embed(tmp_path):
    pair = _pair(NoPositionsGPT2, GPT2Adapter, tmp_path)
    with pytest.raises(ConformanceError, match=r"hook_pos_embed \(the HF model has a learned position table"):
        check_implied_hooks(pair)


def test_kit_catches_a_forgotten_rotary(tmp_path):
    pair = _pair(NoRotaryLlama, LlamaAdapter, tmp_path)
    with pytest.raises(ConformanceError, match=r"blocks\.0\.attn\.hook_rot_q \(the model is rotary\)"):
        check_implied_hooks(pair)


def test_kit_catches_mlp_hooks_on_flattened_positions(tmp_path):
    pair = _pair(FlatMLPGPT2, GPT2Adapter, tmp_path)
    with pytest.raises(ConformanceError, match=r"blocks\.0\.mlp\.hook_pre: shape \(14, 128\) alone, the contract says"):
        check_shapes(pair)


def test_kit_catches_a_hook_whose_return_value_is_ignored(tmp_path):
    pair = make_pair(GPT2Adapter, directory=tmp_path)
    attn = pair.bridge.blocks[1].attn
    real = attn.hook_pattern.__call__

    class Ignoring(type(attn.hook_pattern)):
        def __call__(self, x):
            real(x)
            return x

    attn.hook_pattern.__class__ = Ignoring
    with pytest.raises(ConformanceError, match=r"blocks\.1\.attn\.hook_pattern \("):
        check_every_hook_matters(pair)


def test_comparisons_say_what_and_by_how_much():
    with pytest.raises(ConformanceError, match=r"logits vs HF: shape \(2, 3\) where the reference has \(2, 4\)"):
        expect_close(torch.zeros(2, 3), torch.zeros(2, 4), "logits vs HF")
    with pytest.raises(ConformanceError, match=r"logits vs HF: max \|difference\| = 0\.001 > tolerance 1e-05"):
        expect_close(torch.zeros(2), torch.tensor([0.0, 1e-3]), "logits vs HF")
    assert max_diff(torch.ones(3), torch.ones(3), "same") == 0.0


def _installed_first_party() -> list:
    return [info for info in get_registry().plugins if canonical(info.distribution) in known.FIRST_PARTY]


def test_known_table_lists_every_installed_first_party_architecture():
    plugins = _installed_first_party()
    assert plugins, "no first-party plugin is installed"
    for info in plugins:
        for adapter in info.adapters:
            for name in adapter.architectures:
                assert known.ARCHITECTURE_PLUGINS.get(name) == canonical(info.distribution), (adapter, name)
            for name in adapter.model_types:
                assert known.MODEL_TYPE_PLUGINS.get(name) == canonical(info.distribution), (adapter, name)


@pytest.mark.parametrize(
    "adapter",
    [a for info in _installed_first_party() for a in info.adapters if "vision" not in info.distribution],
    ids=lambda a: a.__name__,
)
def test_bridge_parameters_are_the_hf_models_own(adapter, tmp_path):
    """No HF module is registered as a child of a component: ``bridge.named_parameters()`` lists each HF
    parameter once, under ``hf_model.``, exactly as the HF model lists it."""
    model = make_pair(adapter, directory=tmp_path).bridge
    names = [name for name, _ in model.named_parameters(remove_duplicate=False)]
    hf_names = [f"hf_model.{name}" for name, _ in model.hf_model.named_parameters(remove_duplicate=False)]
    assert names == hf_names


class FlattenedMLP(torch.nn.Module):
    """An MLP run the way HF's OPT runs it: on ``[b·p, d]``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 6)
        self.fc2 = torch.nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [b, p, d] -> [b·p, d]
        return self.fc2(torch.relu(self.fc1(flat))).view(shape)


def test_flat_positions_fire_hooks_batch_first_even_alone():
    """A hook point tapped through ``FlatPositions`` sees ``[b, p, d_mlp]`` when it is the only hook in use,
    and a patch there equals the same patch applied to HF's flattened tensor."""
    from bridge.kernel.components import Component, FlatPositions
    from bridge.kernel.hook_points import HookPoint

    torch.manual_seed(0)
    mlp = FlattenedMLP()
    component = Component(mlp)
    component.hook_pre = HookPoint()
    flat = FlatPositions(mlp)
    component.attach(flat.recorder((component.hook_pre,)))
    component.attach(OutputTap(mlp.fc1, flat.wrap(component.hook_pre), (component.hook_pre,)))
    x = torch.randn(2, 3, 4)
    seen = []

    def patch(t, hook):
        seen.append(tuple(t.shape))
        return t * torch.arange(6.0)

    handle = component.hook_pre.add_hook(patch)
    got = mlp(x)
    handle.remove()
    assert seen == [(2, 3, 6)]
    expected = mlp.fc2(torch.relu(mlp.fc1(x) * torch.arange(6.0)))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert not mlp._forward_hooks and not mlp.fc1._forward_hooks and not mlp._forward_pre_hooks
