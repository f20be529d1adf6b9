"""Layers of different kinds in one model (``PerLayerBlockSpec``), and core's q/k-norm attention, on a Qwen3
whose layers alternate sliding-window and full attention: the full-attention layers are built as
``QKNormAttention`` (``hook_q_normed``/``hook_k_normed``), the sliding ones as plain ``Attention``, the kinds read
from the HF config's ``layer_types``. The kit passes on both paths; the q/k-norm hooks equal the HF reference's own
norm modules on the projections; component-map mistakes on any layer are refused before anything is built."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import pytest
import torch
from transformers import Qwen3Config

import bridge
from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, Norm, QKNormAttention, SequentialBlock, SplitQKV
from bridge.kernel import TINY_SPECIAL_IDS, TINY_VOCAB, BridgeConfig, ComponentMapError, Examples, PerLayerBlockSpec
from bridge.testing import ALL_CHECKS, ConformanceError, check_implied_hooks, make_pair, save_tiny_model

RMS = {"kind": "RMS"}
ATTN = {"qkv": SplitQKV(), "out": "o_proj", "rotary": True}


class WindowedQKNormAttention(QKNormAttention):
    """The same attention under another class: which class each layer gets shows which spec built it."""


class AlternatingQwen3Adapter(Adapter):
    """Qwen3 with its full-attention and sliding-window layers built from two specs (a test of per-layer specs)."""

    sliding_attention: ClassVar[type[Attention]] = WindowedQKNormAttention

    architectures: ClassVar[tuple[str, ...]] = ("Qwen3ForCausalLM",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            "d_head": c.head_dim,
            "rotary_dim": c.head_dim,
            "positional_embedding_type": "rotary",
            "normalization_type": "RMS",
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        def block(attention: Spec) -> BlockSpec:
            children = {
                "ln1": Spec(Norm, "input_layernorm", RMS),
                "attn": attention,
                "ln2": Spec(Norm, "post_attention_layernorm", RMS),
                "mlp": Spec(MLP, "mlp", {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"}),
            }
            return BlockSpec(SequentialBlock, children)

        specs = {
            "full_attention": block(Spec(QKNormAttention, "self_attn", {**ATTN, "norm_layout": "bphd"})),
            "sliding_attention": block(Spec(self.sliding_attention, "self_attn", self.sliding_options())),
        }
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=PerLayerBlockSpec(tuple(self.hf_config.layer_types), specs),
            ln_final=Spec(Norm, "norm", RMS),
        )


    def sliding_options(self) -> dict[str, Any]:
        return {**ATTN, "norm_layout": "bphd"}


class AlternatingQwen3Examples(Examples):
    adapter = AlternatingQwen3Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Qwen3Config:
        return Qwen3Config(
            num_hidden_layers=3,
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            use_sliding_window=True,
            sliding_window=4,
            max_window_layers=0,
            layer_types=["full_attention", "sliding_attention", "full_attention"],
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=["Qwen3ForCausalLM"],
        )


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    path = tmp_path_factory.mktemp("alternating-qwen3")
    save_tiny_model(AlternatingQwen3Examples.tiny_config(), path)
    return path


@pytest.mark.parametrize("path", ["native", "hooked"])
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_conformance(directory, check, path):
    check(make_pair(AlternatingQwen3Examples, path=path, directory=directory))


def test_each_layer_is_built_from_the_spec_of_its_kind(directory):
    model = bridge.load(directory, adapter=AlternatingQwen3Adapter)
    kinds = [type(block.attn) for block in model.blocks]
    assert kinds == [QKNormAttention, WindowedQKNormAttention, QKNormAttention]
    assert all(f"blocks.{i}.attn.hook_q_normed" in model.hook_dict for i in range(3))


class WithoutSlidingQKNorms(AlternatingQwen3Adapter):
    """A mistake: the sliding layers built as plain attention, though HF's have q/k norms."""

    sliding_attention: ClassVar[type[Attention]] = Attention

    def sliding_options(self) -> dict[str, Any]:
        return ATTN


class WithoutSlidingQKNormsExamples(AlternatingQwen3Examples):
    adapter = WithoutSlidingQKNorms


def test_the_kit_catches_a_layer_kind_built_without_its_qk_norms(directory):
    """Only layer 1's spec is wrong; the kit names that layer's missing norm hooks."""
    pair = make_pair(WithoutSlidingQKNormsExamples, directory=directory)
    with pytest.raises(ConformanceError, match=r"blocks\.1\.attn\.hook_(q|k)_normed"):
        check_implied_hooks(pair)


def test_q_and_k_norm_hooks_are_the_reference_norms_on_the_projections(directory):
    """``hook_q_normed``/``hook_k_normed`` equal the HF reference's ``q_norm``/``k_norm`` modules applied to the
    cached ``hook_q``/``hook_k`` (what RoPE then rotates: ``hook_rot_q`` differs from them)."""
    pair = make_pair(AlternatingQwen3Examples, directory=directory)
    _, cache = pair.bridge.run_with_cache(pair.tokens())
    for layer in (0, 2):
        attn = pair.reference.model.layers[layer].self_attn
        with torch.no_grad():
            q = attn.q_norm(cache[f"blocks.{layer}.attn.hook_q"])
            k = attn.k_norm(cache[f"blocks.{layer}.attn.hook_k"])
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_q_normed"], q, atol=1e-6, rtol=0)
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_k_normed"], k, atol=1e-6, rtol=0)
        assert (cache[f"blocks.{layer}.attn.hook_rot_q"][:, 1:] - q[:, 1:]).abs().max() > 1e-3


class _Broken(AlternatingQwen3Adapter):
    mistake: ClassVar[str] = ""

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        cmap = super().component_map(cfg)
        per_layer: PerLayerBlockSpec = cmap.block  # type: ignore[assignment]
        if self.mistake == "count":
            return replace(cmap, block=replace(per_layer, kinds=per_layer.kinds[:-1]))
        if self.mistake == "kind":
            return replace(cmap, block=replace(per_layer, specs={"full_attention": per_layer.specs["full_attention"]}))
        sliding = per_layer.specs["sliding_attention"]
        bad = replace(sliding, children={**sliding.children, "mlp": replace(sliding.children["mlp"], path="mlpp")})
        return replace(cmap, block=replace(per_layer, specs={**per_layer.specs, "sliding_attention": bad}))


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("count", "2 kinds, but the HF model has 3 layers"),
        ("kind", r"kinds \['sliding_attention'\] have no spec"),
        ("path", r"has path 'mlpp', but the HF block layers\.1"),  # only layer 1 (a sliding one) is wrong
    ],
)
def test_map_mistakes_on_any_layer_are_refused(directory, mistake, message):
    broken = type(f"Broken{mistake}", (_Broken,), {"mistake": mistake})
    with pytest.raises(ComponentMapError, match=message):
        bridge.load(directory, adapter=broken)
