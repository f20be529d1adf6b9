"""Batched patching, attribution and edge runs on every family: the tiny example model of each, against patching
by hand (one ``run_with_hooks`` per index) and against the model's own runs.

Covers what only some families have: grouped key/value heads (Llama), ALiBi (BLOOM), latent attention and mixtures
of experts with dense layers (DeepSeek-V2/V3: NaN where a layer has no experts), SSM mixers and their per-step
states (Mamba, Mamba-2).
"""

from __future__ import annotations

import itertools

import pytest
import torch

import bridge
from bridge import attribution, patching
from bridge.analysis import edges
from bridge.testing import examples_of, save_tiny_model
from bridge_alibi import BloomAdapter
from bridge_gpt2 import GPT2Adapter
from bridge_llama import LlamaAdapter
from bridge_mamba import Mamba2Adapter, MambaAdapter
from bridge_mla import DeepseekV2Adapter, DeepseekV3Adapter

ATOL = 1e-5
FAMILIES = {
    "gpt2": GPT2Adapter,
    "llama": LlamaAdapter,
    "bloom": BloomAdapter,
    "deepseek_v2": DeepseekV2Adapter,
    "deepseek_v3": DeepseekV3Adapter,
    "mamba": MambaAdapter,
    "mamba2": Mamba2Adapter,
}
ATTENTION = ("resid_pre", "mlp_out", "z", "k", "pattern")
SWEEPS = {
    "gpt2": ATTENTION,
    "llama": ATTENTION,
    "bloom": ATTENTION,
    "deepseek_v2": (*ATTENTION, "attn.hook_kv_latent", "mlp.hook_expert_weights", "mlp.hook_expert_outputs"),
    "deepseek_v3": ("resid_pre", "attn.hook_q_latent", "mlp.hook_expert_weights"),
    "mamba": ("resid_pre", "mixer.hook_ssm_out", "mixer.hook_y", "mixer.hook_ssm_state"),
    "mamba2": ("resid_pre", "mixer.hook_ssm_out", "mixer.hook_y", "mixer.hook_ssm_state"),
}
OPT_IN = {"mlp.hook_expert_outputs": "hook_expert_outputs", "mixer.hook_ssm_state": "hook_ssm_state"}


def last_logit(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


_models: dict[str, tuple] = {}


@pytest.fixture(params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    name = request.param
    if name not in _models:
        directory = save_tiny_model(examples_of(FAMILIES[name]).example_config(), tmp_path_factory.mktemp(name))
        model = bridge.load(directory, attn_implementation="eager")
        generator = torch.Generator().manual_seed(2)
        clean = torch.randint(1, 100, (2, 5), generator=generator)
        corrupted = clean.clone()
        corrupted[:, 1] = (clean[:, 1] + 5) % 100 + 1
        corrupted[:, 3] = (clean[:, 3] + 9) % 100 + 1
        _models[name] = (model, clean, corrupted)
    return name, *_models[name]


def _axes(name: str, activation: torch.Tensor) -> tuple[str, ...]:
    if name == "pattern":
        return ("layer", "head_index", "dest_pos")
    if name in ("z", "k"):
        return ("layer", "pos", "head")
    if name == "mlp.hook_expert_outputs":
        return ("layer", "pos", "slot")
    return ("layer", "pos")


def _setter(axes):
    if axes == ("layer", "head_index", "dest_pos"):
        return patching.layer_head_pos_pattern_patch_setter
    if len(axes) == 3:
        return patching.layer_pos_head_vector_patch_setter
    return patching.layer_pos_patch_setter


def by_hand(model, corrupted, cache, name, axes):
    """One run_with_hooks per index; NaN where the layer has no such hook (the dense layers of a mixture)."""
    present = [layer for layer in range(model.cfg.n_layers) if patching.hook_name(name, layer) in cache]
    sample = cache[patching.hook_name(name, present[0])]
    sizes = {"layer": model.cfg.n_layers, "pos": corrupted.shape[1], "dest_pos": corrupted.shape[1]}
    sizes["head"] = sizes["head_index"] = sizes["slot"] = sample.shape[1 if name == "pattern" else 2]
    shape = [sizes[a] for a in axes]
    out = torch.full(shape, float("nan"))
    for index in itertools.product(*(range(n) for n in shape)):
        if index[0] not in present:
            continue
        hook = patching.hook_name(name, index[0])

        def edit(x, hook, index=index):
            x = x.clone()
            clean = cache[hook.name]
            if name == "pattern" or len(index) == 3:
                x[:, index[1], index[2]] = clean[:, index[1], index[2]]
            else:
                x[:, index[1]] = clean[:, index[1]]
            return x

        with torch.no_grad():
            out[index] = last_logit(model.run_with_hooks(corrupted, fwd_hooks=[(hook, edit)]))
    return out


def test_batched_sweeps_equal_patching_by_hand(family):
    name, model, clean, corrupted = family
    for sweep in SWEEPS[name]:
        if sweep in OPT_IN:
            model.set_opt_in(OPT_IN[sweep], True)
        try:
            _, cache = model.run_with_cache(clean)
            axes = _axes(sweep, cache)
            expected = by_hand(model, corrupted, cache, sweep, axes)
            for passes in ({}, {"max_batch": 3}):
                found = patching.generic_activation_patch(
                    model, corrupted, cache, last_logit, _setter(axes), sweep, axes, verbose=False, **passes
                )
                torch.testing.assert_close(found, expected, atol=ATOL, rtol=0, equal_nan=True, msg=f"{name} {sweep}")
        finally:
            if sweep in OPT_IN:
                model.set_opt_in(OPT_IN[sweep], False)


def test_named_sweeps_for_ssm_moe_and_latents(family):
    name, model, clean, corrupted = family
    _, cache = model.run_with_cache(clean)
    named = {
        "mixer.hook_ssm_out": patching.get_act_patch_mixer_out,
        "mixer.hook_y": patching.get_act_patch_ssm_y,
        "mlp.hook_expert_weights": patching.get_act_patch_expert_weights,
        "attn.hook_kv_latent": patching.get_act_patch_kv_latent,
        "attn.hook_q_latent": patching.get_act_patch_q_latent,
    }
    for sweep, fn in named.items():
        if sweep not in SWEEPS[name]:
            continue
        expected = patching.generic_activation_patch(
            model, corrupted, cache, last_logit, patching.layer_pos_patch_setter, sweep, ("layer", "pos"), verbose=False
        )
        torch.testing.assert_close(fn(model, corrupted, cache, last_logit, verbose=False), expected, equal_nan=True)
    if name == "deepseek_v3":  # layer 0 is dense: no routing weights to patch there
        weights = patching.get_act_patch_expert_weights(model, corrupted, cache, last_logit, verbose=False)
        assert weights[0].isnan().all() and not weights[1].isnan().any()


def test_edge_runs_are_the_model_and_the_corrupted_run(family):
    _, model, clean, corrupted = family
    graph = edges.build_graph(model)
    with torch.no_grad():
        plain, corrupt_logits = model(clean), model(corrupted)
    logits, _, _ = edges._run(model, graph, clean, None)
    torch.testing.assert_close(logits, plain, atol=2e-5, rtol=0)
    refs = edges.node_writes(model, graph, corrupted)
    logits, _, _ = edges._run(model, graph, clean, None, ablate=graph.allowed.clone(), refs=refs)
    torch.testing.assert_close(logits, corrupt_logits, atol=2e-5, rtol=0)
    assert not [n for n, h in model.hook_dict.items() if h.fwd_hooks or h.bwd_hooks]


def test_attribution_runs_and_adds_up(family):
    """Integrated gradients on the residual stream add up to patching it at every position, on every family."""
    name, model, clean, corrupted = family
    hook = "blocks.1.hook_resid_pre"
    found = attribution.attribute(model, clean, corrupted, last_logit, hooks=[hook], steps=24, verbose=False)
    _, cache = model.run_with_cache(clean, names_filter=hook)
    with torch.no_grad():
        total = float(last_logit(model.run_with_hooks(corrupted, fwd_hooks=[(hook, lambda x, hook: cache[hook.name])])))
        total -= float(last_logit(model(corrupted)))
    assert abs(float(found[hook].sum()) - total) < 2e-3 * max(1.0, abs(total)), name
