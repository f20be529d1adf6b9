"""Attribution patching and EAP-IG against exact patching, on every shipped trained model (``induction-*`` and the
hybrid ``hybrid-induction``, whose blocks alternate an SSM mixer and attention).

The task is the models' own: BOS + A + A (clean) against BOS + A + A' (the second copy fresh), and the metric the
clean second copy's mean log-probability. Exact patching (``bridge.patching``, itself checked against patching by
hand here and in ``test_patching_families.py``) is the reference. Measured on these models (batch 4, copies of 12
tokens; GPT-2, Llama, BLOOM, DeepSeek-V2, Mamba-2, the hybrid): IG's rank correlation with exact patching over the
residual stream and heads/mixers by position 0.84-0.99, AtP's 0.46-0.89; the top units agree; an EAP-IG circuit of
at most 64 edges keeps ≥ 80% of the metric when every other edge is corrupt-ablated by running the model so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bridge
from bridge import attribution, patching
from bridge.analysis import edges
from bridge.app.study import repeated_half_log_prob, study_inputs

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(
    p
    for pattern in ("induction-*", "*-induction")
    for p in (ROOT / "examples" / "models").glob(pattern)
    if (p / "config.json").exists()
)
BATCH, LENGTH = 4, 12


@pytest.fixture(scope="module", params=MODELS, ids=[p.name for p in MODELS])
def shipped(request):
    model = bridge.load(request.param, attn_implementation="eager").eval()
    clean, corrupt = study_inputs(model, BATCH, LENGTH, seed=3)
    metric = repeated_half_log_prob(clean, LENGTH)
    return request.param.name, model, clean, corrupt, metric, _kinds(model)


def _has(model, hook: str) -> bool:
    return any(patching.hook_name(hook, i) in model.hook_dict for i in range(model.cfg.n_layers))


def _kinds(model) -> list[tuple[str, object, tuple[str, ...], str, str]]:
    """Per kind of token mixer the model has (heads, SSM mixers; a hybrid both): the by-position sweep (hook,
    setter, axes), the hook of its units at every position and the axis that counts them."""
    kinds = []
    if _has(model, "attn.hook_pattern"):
        kinds.append(("z", patching.layer_pos_head_vector_patch_setter, ("layer", "pos", "head"), "z", "head"))
    if _has(model, "mixer.hook_y"):
        out = "mixer.hook_ssm_out" if _has(model, "mixer.hook_ssm_out") else "hook_mixer_out"
        kinds.append((out, patching.layer_pos_patch_setter, ("layer", "pos"), "mixer.hook_y", "channel"))
    return kinds


def _exact(model, clean, corrupt, metric, kinds):
    """Exact effects (patched minus corrupted metric): by position, and per unit at every position (NaN where a
    layer lacks the hook)."""
    _, cache = model.run_with_cache(clean)
    with torch.no_grad():
        base = float(metric(model(corrupt)))

    def sweep(hook, setter, axes):
        return (
            patching.generic_activation_patch(model, corrupt, cache, metric, setter, hook, axes, verbose=False) - base
        )

    exact = {"resid_pre": sweep("resid_pre", patching.layer_pos_patch_setter, ("layer", "pos"))}
    units = {}
    for by_pos, setter, axes, unit_hook, unit_axis in kinds:
        exact[by_pos] = sweep(by_pos, setter, axes)
        units[unit_hook] = sweep(unit_hook, patching.layer_head_vector_patch_setter, ("layer", unit_axis))
    return exact, units, cache


def _present(model, names) -> list[str]:
    hooks = [patching.hook_name(n, layer) for n in names for layer in range(model.cfg.n_layers)]
    return [h for h in hooks if h in model.hook_dict]


def test_batched_patching_equals_patching_by_hand(shipped):
    name, model, clean, corrupt, metric, _ = shipped
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_resid_pre"))
    found = patching.get_act_patch_resid_pre(model, corrupt, cache, metric, verbose=False, max_batch=5)
    for layer in range(model.cfg.n_layers):
        for pos in range(0, clean.shape[1], 4):

            def patch(x, hook, pos=pos):
                x = x.clone()
                x[:, pos] = cache[hook.name][:, pos]
                return x

            with torch.no_grad():
                expected = metric(model.run_with_hooks(corrupt, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", patch)]))
            assert abs(float(found[layer, pos]) - float(expected)) < 1e-5, (name, layer, pos)


def test_attribution_ranks_like_exact_patching(shipped):
    name, model, clean, corrupt, metric, kinds = shipped
    exact, units, _ = _exact(model, clean, corrupt, metric, kinds)
    truth = torch.cat([v.flatten() for v in exact.values()])
    unit_truth = torch.cat([v.flatten() for v in units.values()])
    rho, top = {}, {}
    for method in ("atp", "ig"):
        found = attribution.attribute(
            model, clean, corrupt, metric, hooks=_present(model, exact), method=method, verbose=False
        )
        guess = torch.cat([found.stack(n).flatten() for n in exact])
        rho[method] = attribution.rank_correlation(guess, truth)
        per_unit = attribution.attribute(
            model,
            clean,
            corrupt,
            metric,
            hooks=_present(model, units),
            method=method,
            granularity="element",
            verbose=False,
        )
        guesses = []
        for unit_hook in units:
            stacked = per_unit.stack(unit_hook)
            guesses.append(stacked.sum(dim=1) if stacked.ndim == 3 else stacked.sum(dim=(1, 3)))  # [layer, unit]
        top[method] = attribution.top_k_agreement(torch.cat([g.flatten() for g in guesses]), unit_truth, 3)
    print(
        f"{name}: rank correlation with exact patching AtP {rho['atp']:.2f}, IG {rho['ig']:.2f}; "
        f"top-3 units AtP {top['atp']:.2f}, IG {top['ig']:.2f}"
    )
    assert rho["ig"] > 0.8, rho
    assert rho["ig"] > rho["atp"] - 0.05, rho
    assert top["ig"] >= 2 / 3, top


def test_eap_ig_circuit_is_faithful(shipped):
    name, model, clean, corrupt, metric, _ = shipped
    scores = attribution.attribute_edges(model, clean, corrupt, metric, method="eap-ig", steps=4, verbose=False)
    found = None
    for n_edges in (8, 16, 32, 64):
        circuit = attribution.find_circuit(scores, n_edges=n_edges)
        if circuit.edges and attribution.faithfulness(model, circuit, clean, corrupt, metric)["faithfulness"] >= 0.8:
            found = circuit
            break
    assert found is not None, f"{name}: no EAP-IG circuit of ≤ 64 edges keeps 80% of the metric"
    print(f"{name}: {len(found.edges)} edges, faithfulness {found.faithfulness:.2f}: {found.edges[:6]}")
    assert "logits" in {r for _, r, _ in found.edges}


def test_edge_runs_on_the_trained_model(shipped):
    _, model, clean, corrupt, _, _ = shipped
    graph = edges.build_graph(model)
    with torch.no_grad():
        plain, corrupted = model(clean), model(corrupt)
    logits, _, _ = edges._run(model, graph, clean, None)
    torch.testing.assert_close(logits, plain, atol=5e-5, rtol=0)
    refs = edges.node_writes(model, graph, corrupt)
    logits, _, _ = edges._run(model, graph, clean, None, ablate=graph.allowed.clone(), refs=refs)
    torch.testing.assert_close(logits, corrupted, atol=5e-5, rtol=0)
