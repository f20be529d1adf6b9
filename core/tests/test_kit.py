"""The conformance kit catches the mistakes adapter authors make.

Each mistake is planted in a public-API fixture adapter (``public_api_adapters``) and caught by one of the checks
``conformance_test`` runs (``ALL_CHECKS``), through the same ``make_pair`` a plugin's conformance test uses; the
unbroken fixture adapters pass every check (``test_public_block_api``). The mistakes are the ones outside authors
made writing Persimmon, BERT, Jamba and Nemotron plugins, and the ones an audit of the kit found it passing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from public_api_adapters import (
    BertAdapter,
    BertExamples,
    GPT2Adapter,
    GPT2Examples,
    JambaAdapter,
    JambaExamples,
    LlamaAdapter,
    LlamaExamples,
    MixerBlock,
    NemotronAdapter,
    NemotronExamples,
    PhiAdapter,
    PhiExamples,
    Qwen3Adapter,
    Qwen3Examples,
)

from bridge import BlockSpec, LayerKinds, Spec
from bridge.components import MLP, Attention, Component, InputTap, Norm, OutputTap, SequentialBlock, SplitQKV
from bridge.kernel import HookPoint
from bridge.kernel.errors import ComponentMapError
from bridge.testing import (
    ALL_CHECKS,
    ConformanceError,
    check_attention_algebra,
    check_config,
    check_every_hook_matters,
    check_gradients,
    check_head_ablation,
    check_hooks_match_hf,
    check_implied_hooks,
    check_left_padded_batches,
    check_projections,
    check_residual_algebra,
    check_shapes,
    check_train_mode,
    conformance_params,
    expect_close,
    make_pair,
)
from bridge.testing.compare import max_diff


def planted(examples: type, adapter: type) -> type:
    """The examples of ``examples``, building the broken ``adapter`` (a subclass of the examples' adapter)."""
    return type(f"{adapter.__name__}Examples", (examples,), {"adapter": adapter})


def caught(examples: type, check: Any, match: str, tmp_path: Any, path: str = "native") -> None:
    """``check``, one of the checks ``conformance_test`` runs on ``path``, fails on the planted mistake with a
    ``ConformanceError`` naming the check and saying ``match``."""
    assert check in ALL_CHECKS
    assert path in check.paths
    pair = make_pair(examples, None, path, directory=tmp_path)
    with pytest.raises(ConformanceError, match=match) as err:
        check(pair)
    assert str(err.value).startswith(f"{check.__name__}: ")


def with_child(cmap: Any, name: str, spec: Spec | None) -> Any:
    children = {k: v for k, v in {**cmap.block.children, name: spec}.items() if v is not None}
    return replace(cmap, block=replace(cmap.block, children=children))


# ------------------------------------------------------------------------------ hooks the model implies


class NoPositionsGPT2(GPT2Adapter):
    """Leaves out the learned position table."""

    def component_map(self, cfg):
        return replace(super().component_map(cfg), pos_embed=None)


class NoPositionsBert(BertAdapter):
    """BERT's table is ``bert.embeddings.position_embeddings``, outside the blocks' parent module."""

    def component_map(self, cfg):
        return replace(super().component_map(cfg), pos_embed=None)


@pytest.mark.parametrize(("examples", "adapter"), [(GPT2Examples, NoPositionsGPT2), (BertExamples, NoPositionsBert)])
def test_kit_catches_a_missing_pos_embed_wherever_the_table_is(examples, adapter, tmp_path):
    match = r"hook_pos_embed \(the HF model uses a learned position table"
    caught(planted(examples, adapter), check_implied_hooks, match, tmp_path)


class NoRotaryLlama(LlamaAdapter):
    """Forgot ``rotary=True``."""

    attention = (Attention, {**LlamaAdapter.attention[1], "rotary": False})


def test_kit_catches_a_forgotten_rotary(tmp_path):
    match = r"blocks\.0\.attn\.hook_rot_q \(the model is rotary\)"
    caught(planted(LlamaExamples, NoRotaryLlama), check_implied_hooks, match, tmp_path)


class PlainAttentionQwen3(Qwen3Adapter):
    """Qwen3's q/k norms left out: plain ``Attention``."""

    attention = (Attention, {"qkv": SplitQKV(), "out": "o_proj", "rotary": True})


def test_kit_catches_omitted_qk_norm_hooks(tmp_path):
    match = r"blocks\.0\.attn\.hook_q_normed \(the HF attention has its own query/key norm\)"
    caught(planted(Qwen3Examples, PlainAttentionQwen3), check_implied_hooks, match, tmp_path)


class SwappedNormsQwen3(Qwen3Adapter):
    """``hook_q_normed`` on the key norm and ``hook_k_normed`` on the query norm."""

    attention = (Qwen3Adapter.attention[0], {**Qwen3Adapter.attention[1], "q_norm": "k_norm", "k_norm": "q_norm"})


def test_kit_catches_swapped_qk_norm_hooks(tmp_path):
    match = r"blocks\.0\.attn\.hook_q_normed vs the output of HF's model\.layers\.0\.self_attn\.q_norm"
    caught(planted(Qwen3Examples, SwappedNormsQwen3), check_hooks_match_hf, match, tmp_path)


# ------------------------------------------------------------------------------ projections on the wrong tensor


class SwappedQKPhi(PhiAdapter):
    """``hook_q`` on the key projection and ``hook_k`` on the query projection (no GQA: the shapes agree)."""

    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        attn = cmap.block.children["attn"]
        qkv = SplitQKV("k_proj", "q_proj", "v_proj")
        return with_child(cmap, "attn", replace(attn, options={**attn.options, "qkv": qkv}))


class SwappedQKBert(BertAdapter):
    """No rotary: the scores are computed from ``hook_q``/``hook_k`` themselves."""

    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        attn = cmap.block.children["attn"]
        qkv = SplitQKV("self.key", "self.query", "self.value")
        return with_child(cmap, "attn", replace(attn, options={**attn.options, "qkv": qkv}))


@pytest.mark.parametrize(
    ("examples", "adapter", "match"),
    [
        (PhiExamples, SwappedQKPhi, r"blocks\.0\.attn\.hook_rot_q vs blocks\.0\.attn\.hook_q: at position 0"),
        (BertExamples, SwappedQKBert, r"blocks\.0\.attn\.hook_attn_scores vs .* × hook_q · hook_k"),
    ],
    ids=["rotary", "no-rotary"],
)
def test_kit_catches_queries_and_keys_swapped(examples, adapter, match, tmp_path):
    """Both paths give HF's logits (the projections are HF's; only the hooks are on the wrong ones)."""
    pair = make_pair(planted(examples, adapter), None, "hooked", directory=tmp_path)
    expect_close(pair.output(pair.tokens()), pair.reference_output(pair.tokens()), "logits")
    caught(planted(examples, adapter), check_attention_algebra, match, tmp_path)


class SwappedGateUpLlama(LlamaAdapter):
    """``hook_pre`` (and ``W_gate``) on the up projection, ``hook_pre_linear`` (``W_in``) on the gate."""

    def component_map(self, cfg):
        mlp = Spec(MLP, "mlp", {"pre": "up_proj", "pre_linear": "gate_proj", "out": "down_proj"})
        return with_child(super().component_map(cfg), "mlp", mlp)


def test_kit_catches_gate_and_up_swapped(tmp_path):
    match = r"blocks\.0\.mlp\.hook_post vs silu\(hook_pre\) \* hook_pre_linear"
    caught(planted(LlamaExamples, SwappedGateUpLlama), check_projections, match, tmp_path)


class GatedNemotron(NemotronAdapter):
    """Nemotron's plain squared-ReLU MLP declared gated, with ``up_proj`` as both halves."""

    def component_map(self, cfg):
        mlp = Spec(MLP, "mlp", {"pre": "up_proj", "pre_linear": "up_proj", "out": "down_proj"})
        return with_child(super().component_map(cfg), "mlp", mlp)


def test_kit_catches_a_plain_mlp_mapped_as_gated(tmp_path):
    match = r"blocks\.0\.mlp\.hook_post vs relu2\(hook_pre\) \* hook_pre_linear"
    caught(planted(NemotronExamples, GatedNemotron), check_projections, match, tmp_path)


# ------------------------------------------------------------------------------ config


class FullRotaryPhi(PhiAdapter):
    """``cfg.rotary_dim`` the full head where Phi rotates half of it."""

    def config_overrides(self):
        return {**super().config_overrides(), "rotary_dim": self.hf_config.hidden_size // 4}


class GatedGPT2(GPT2Adapter):
    """Declares GPT-2's plain MLP gated."""

    def config_overrides(self):
        return {**super().config_overrides(), "gated_mlp": True}


@pytest.mark.parametrize(
    ("examples", "adapter", "match"),
    [
        (PhiExamples, FullRotaryPhi, r"cfg\.rotary_dim is 8, the features hook_rot_q moves in block 0 says 4"),
        (GPT2Examples, GatedGPT2, r"cfg\.gated_mlp is True, the MLPs' hooks \(hook_pre_linear\) says False"),
    ],
    ids=["rotary_dim", "gated_mlp"],
)
def test_kit_catches_config_fields_that_contradict_the_model(examples, adapter, match, tmp_path):
    caught(planted(examples, adapter), check_config, match, tmp_path)


# ------------------------------------------------------------------------------ residual algebra


class InnerMixer(Component):
    """Taps the Mamba mixer's output projection's input (``d_inner``) instead of its output (``d_model``)."""

    def __init__(self, hf_module, cfg):
        super().__init__(hf_module)
        self.hook_out = HookPoint()
        self.attach(InputTap(hf_module.out_proj, self.hook_out, (self.hook_out,)))


class InnerMixerJamba(JambaAdapter):
    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        specs = dict(cmap.block.specs)
        for kind, spec in specs.items():
            if "mixer" in spec.children:
                specs[kind] = replace(spec, children={**spec.children, "mixer": Spec(InnerMixer, "mamba")})
        return replace(cmap, block=replace(cmap.block, specs=specs))


def test_kit_catches_a_mixer_hook_on_a_d_inner_tensor(tmp_path):
    match = r"blocks\.0: mixer\.hook_out has shape \(2, 12, 64\) but hook_resid_mid has \(2, 12, 32\)"
    caught(planted(JambaExamples, InnerMixerJamba), check_residual_algebra, match, tmp_path)


class UnpatchedSumBlock(SequentialBlock):
    """Fires ``hook_mlp_out`` but adds the MLP's unhooked output to the stream."""

    def wire(self, hidden, call_kwargs):
        resid_pre = self.hook_resid_pre(hidden)
        attn, _ = self.run_attention(self.run_norm("ln1", resid_pre), call_kwargs)
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(attn))
        mlp = self.run_mlp(self.run_norm("ln2", resid_mid))
        self.hook_mlp_out(mlp)
        return self.hook_resid_post(resid_mid + mlp)


class UnpatchedSumLlama(LlamaAdapter):
    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        return replace(cmap, block=replace(cmap.block, kind=UnpatchedSumBlock))


def test_kit_catches_an_identity_that_fails_once_its_terms_are_patched(tmp_path):
    match = r"blocks\.0: hook_resid_post vs hook_resid_mid \+ hook_mlp_out \(every sublayer output patched\)"
    caught(planted(LlamaExamples, UnpatchedSumLlama), check_residual_algebra, match, tmp_path)


# ------------------------------------------------------------------------------ gradients, padding, train mode


class LaterDetachBlock(SequentialBlock):
    """Detaches the MLP's input in every block but the first."""

    def run_mlp(self, x):
        layer = int(self.hook_resid_pre.name.split(".")[1])
        return super().run_mlp(x.detach() if layer else x)


class LaterDetachLlama(LlamaAdapter):
    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        return replace(cmap, block=replace(cmap.block, kind=LaterDetachBlock))


def test_kit_catches_a_gradient_cut_in_a_later_block(tmp_path):
    match = r"backward hook gradient at blocks\.[01]\.hook_(resid_post|resid_mid) vs HF's autograd"
    caught(planted(LlamaExamples, LaterDetachLlama), check_gradients, match, tmp_path)


class MasklessMixerBlock(MixerBlock):
    """Drops the padding mask when its hooks are in use."""

    def wire(self, hidden, call_kwargs):
        return super().wire(hidden, {k: v for k, v in call_kwargs.items() if k != "attention_mask"})


class MasklessJamba(JambaAdapter):
    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        specs = {
            k: replace(s, kind=MasklessMixerBlock) if s.kind is MixerBlock else s for k, s in cmap.block.specs.items()
        }
        return replace(cmap, block=replace(cmap.block, specs=specs))


def test_kit_catches_a_mixer_that_drops_the_padding_mask_when_hooked(tmp_path):
    """With no hooks the HF layer runs and the output is right; with every hook cached it is not."""
    match = r"logits of a left-padded batch, every hook cached, vs HF"
    caught(planted(JambaExamples, MasklessJamba), check_left_padded_batches, match, tmp_path)


class DoubleDropoutGPT2(GPT2Adapter):
    """Applies the attention's residual dropout again in the wiring (HF's attention already applies it)."""

    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        return replace(cmap, block=replace(cmap.block, extra_paths={"attn_dropout": "attn.resid_dropout"}))


def test_kit_catches_a_dropout_in_the_wrong_place(tmp_path):
    """Eval mode cannot see it: the logits equal HF's with every hook in use."""
    pair = make_pair(planted(GPT2Examples, DoubleDropoutGPT2), None, "native", directory=tmp_path)
    check_hooks_match_hf(pair)
    match = r"train mode, every hook in use, dropout p=0\.1 vs the HF reference \(same seed\)"
    caught(planted(GPT2Examples, DoubleDropoutGPT2), check_train_mode, match, tmp_path)


# ------------------------------------------------------------------------------ hybrids and layer kinds


class ReversedHeads(HookPoint):
    """A ``hook_z`` that shows (and takes patches of) the heads in reverse order."""

    def __call__(self, z):
        return super().__call__(z.flip(2)).flip(2)


class ReversedHeadsAttention(Attention):
    def __init__(self, hf_module, cfg, **options):
        super().__init__(hf_module, cfg, **options)
        self.hook_z = ReversedHeads()
        self.hook_z.on_change(self._update_seam)


class ReversedHeadsJamba(JambaAdapter):
    """The attention layers' ``hook_z`` has its heads reversed (layer 0 is a Mamba layer, layer 1 attends)."""

    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        specs = {}
        for kind, spec in cmap.block.specs.items():
            attn = spec.children.get("attn")
            if attn is not None:
                spec = replace(spec, children={**spec.children, "attn": replace(attn, kind=ReversedHeadsAttention)})
            specs[kind] = spec
        return replace(cmap, block=replace(cmap.block, specs=specs))


def test_kit_checks_attention_in_a_hybrid_whose_first_layer_is_not_attention(tmp_path):
    """Head ablation runs on the first attention layer (block 1), so heads mixed up there are caught."""
    match = r"blocks\.1\.attn\.hook_z head 1 zeroed vs its out_proj rows zeroed in the HF reference"
    caught(planted(JambaExamples, ReversedHeadsJamba), check_head_ablation, match, tmp_path)


def test_kit_compares_a_hybrids_patterns_per_attention_layer(tmp_path):
    """HF returns attention patterns for Jamba's attention layers only; each is compared with its layer's hook."""
    pair = make_pair(JambaExamples, None, "native", directory=tmp_path)
    reference = pair.run_reference(pair.tokens(), output_attentions=True)
    assert len(reference.attentions) == 2  # layers 1 and 3
    check_hooks_match_hf(pair)


class ShiftedKindsJamba(JambaAdapter):
    """The layer kinds read one layer off: attention specs on Mamba layers."""

    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        kinds = cmap.block.kinds[1:] + cmap.block.kinds[:1]
        return replace(cmap, block=replace(cmap.block, kinds=kinds))


def test_a_layer_kind_mix_up_is_named_when_the_bridge_is_built(tmp_path):
    """Every layer is checked against its own spec: the mix-up names the layer and the missing path."""
    with pytest.raises(
        ComponentMapError, match=r"ShiftedKindsJamba: component map block child 'attn' has path 'self_attn'.* layers\.0"
    ):
        make_pair(planted(JambaExamples, ShiftedKindsJamba), None, "native", directory=tmp_path)


class TypoAlgebraBlock(SequentialBlock):
    algebra = (("hook_resid_mid", ("hook_resid_pre", "hook_atn_out")), *SequentialBlock.algebra[1:])


class TypoAlgebraGPT2(GPT2Adapter):
    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        return replace(cmap, block=replace(cmap.block, kind=TypoAlgebraBlock))


def test_any_failure_inside_a_check_is_that_checks_conformance_error(tmp_path):
    """A wiring whose algebra names a hook it does not have: a KeyError inside the check, reported as the check's."""
    match = r"check_residual_algebra: \w*Error inside the check: .*hook_atn_out"
    caught(planted(GPT2Examples, TypoAlgebraGPT2), check_residual_algebra, match, tmp_path)


# ------------------------------------------------------------------------------ shapes and sensitivity


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
        return with_child(cmap, "mlp", replace(cmap.block.children["mlp"], kind=FlatMLP))


def test_kit_catches_mlp_hooks_on_flattened_positions(tmp_path):
    match = r"blocks\.0\.mlp\.hook_pre: shape \(14, 128\) alone, the contract says"
    caught(planted(GPT2Examples, FlatMLPGPT2), check_shapes, match, tmp_path)


def test_kit_catches_a_hook_whose_return_value_is_ignored(tmp_path):
    pair = make_pair(GPT2Examples, directory=tmp_path)
    attn = pair.bridge.blocks[1].attn
    real = attn.hook_pattern.__call__

    class Ignoring(type(attn.hook_pattern)):
        def __call__(self, x):
            real(x)
            return x

    attn.hook_pattern.__class__ = Ignoring
    with pytest.raises(ConformanceError, match=r"check_every_hook_matters: .*blocks\.1\.attn\.hook_pattern \("):
        check_every_hook_matters(pair)


# ------------------------------------------------------------------------------ the kit's own rules


def test_comparisons_say_what_and_by_how_much():
    with pytest.raises(ConformanceError, match=r"logits vs HF: shape \(2, 3\) where the reference has \(2, 4\)"):
        expect_close(torch.zeros(2, 3), torch.zeros(2, 4), "logits vs HF")
    with pytest.raises(ConformanceError, match=r"logits vs HF: max \|difference\| = 0\.001 > tolerance 1e-05"):
        expect_close(torch.zeros(2), torch.tensor([0.0, 1e-3]), "logits vs HF")
    assert max_diff(torch.ones(3), torch.ones(3), "same") == 0.0


def test_checks_that_cache_every_hook_run_once_and_the_others_on_both_paths():
    """``conformance_test`` runs a check on the hooked path only where that path changes what it compares."""
    params = conformance_params([GPT2Examples])
    ran = {(p.values[1], p.values[2].__name__) for p in params}
    assert ("hooked", "check_head_ablation") in ran and ("hooked", "check_gradients") in ran
    assert ("hooked", "check_residual_algebra") not in ran and ("native", "check_residual_algebra") in ran
    assert {name for _, name in ran} == {c.__name__ for c in ALL_CHECKS}


def test_layer_kinds_refuse_a_layer_without_a_spec():
    spec = LayerKinds(kinds=("a", "b"), specs={"a": BlockSpec(SequentialBlock, {})})
    with pytest.raises(ComponentMapError, match=r"layer 1 is of kind 'b', which has no spec; specs has \['a'\]"):
        spec.for_layer(1, torch.nn.Module())
    with pytest.raises(ComponentMapError, match=r"layer 2 has no kind; kinds names 2 layers"):
        spec.for_layer(2, torch.nn.Module())


@pytest.mark.parametrize(
    ("options", "says"),
    [({"kind": "Layer"}, "kind='Layer' is not a norm"), ({"kind": "LN", "weight_in_float32": True}, "RMS norms only")],
)
def test_norm_refuses_options_it_would_ignore(options, says):
    with pytest.raises(ComponentMapError, match=says):
        Norm(torch.nn.LayerNorm(4), None, **options)


class NoOffsetNemotron(NemotronAdapter):
    """Forgets that Nemotron's layer norm scales by ``1 + w``."""

    def component_map(self, cfg):
        cmap = super().component_map(cfg)
        return with_child(cmap, "ln1", Spec(Norm, "input_layernorm", {"kind": "LN"}))


def test_a_layer_norm_weight_offset_is_applied_and_its_absence_caught(tmp_path):
    from bridge.testing import check_norms_match_hf

    caught(planted(NemotronExamples, NoOffsetNemotron), check_norms_match_hf, r"blocks\.0\.ln1 re-expressed", tmp_path)


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
