"""Attribution patching and EAP-IG against exact patching, on every shipped trained model (``induction-*``).

The task is the models' own: BOS + A + A (clean) against BOS + A + A' (the second copy fresh), and the metric
the clean second copy's mean log-probability. Exact patching (``bridge.patching``, itself checked against
patching by hand here and in ``test_patching_families.py``) is the reference. Measured on these models (batch 4,
copies of 12 tokens): IG's rank correlation with exact patching over the residual stream and heads/mixers by
position 0.86-0.97, AtP's 0.45-0.85; the top units agree; an EAP-IG circuit of at most 64 edges keeps ≥ 80% of
the metric when every other edge is corrupt-ablated by running the model so.
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
MODELS = sorted(p for p in (ROOT / "examples" / "models").glob("induction-*") if (p / "config.json").exists())
BATCH, LENGTH = 4, 12


@pytest.fixture(scope="module", params=MODELS, ids=[p.name for p in MODELS])
def shipped(request):
    model = bridge.load(request.param, attn_implementation="eager").eval()
    clean, corrupt = study_inputs(model, BATCH, LENGTH, seed=3)
    metric = repeated_half_log_prob(clean, LENGTH)
    heads = all(f"blocks.{i}.attn.hook_pattern" in model.hook_dict for i in range(model.cfg.n_layers))
    return request.param.name, model, clean, corrupt, metric, heads


def _exact(model, clean, corrupt, metric, heads):
    _, cache = model.run_with_cache(clean)
    with torch.no_grad():
        base = float(metric(model(corrupt)))
    by_pos = "z" if heads else "mixer.hook_ssm_out"
    sweep = patching.get_act_patch_attn_head_out_by_pos if heads else patching.get_act_patch_mixer_out
    exact = {
        "resid_pre": patching.get_act_patch_resid_pre(model, corrupt, cache, metric, verbose=False) - base,
        by_pos: sweep(model, corrupt, cache, metric, verbose=False) - base,
    }
    unit_hook = "z" if heads else "mixer.hook_y"
    units = patching.generic_activation_patch(
        model,
        corrupt,
        cache,
        metric,
        patching.layer_head_vector_patch_setter,
        unit_hook,
        ("layer", "head"),
        verbose=False,
    )
    return exact, units - base, cache


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
    name, model, clean, corrupt, metric, heads = shipped
    exact, units, _ = _exact(model, clean, corrupt, metric, heads)
    hooks = [patching.hook_name(n, layer) for n in exact for layer in range(model.cfg.n_layers)]
    unit_hooks = [patching.hook_name("z" if heads else "mixer.hook_y", i) for i in range(model.cfg.n_layers)]
    truth = torch.cat([v.flatten() for v in exact.values()])
    rho, top = {}, {}
    for method in ("atp", "ig"):
        found = attribution.attribute(model, clean, corrupt, metric, hooks=hooks, method=method, verbose=False)
        guess = torch.cat([found.stack(n).flatten() for n in exact])
        rho[method] = attribution.rank_correlation(guess, truth)
        per_unit = attribution.attribute(
            model, clean, corrupt, metric, hooks=unit_hooks, method=method, granularity="element", verbose=False
        ).stack("z" if heads else "mixer.hook_y")
        per_unit = per_unit.sum(dim=1) if per_unit.ndim == 3 else per_unit.sum(dim=(1, 3))  # [layer, unit]
        top[method] = attribution.top_k_agreement(per_unit, units, 3)
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
