"""Edge attribution (EAP, EAP-IG), edge-ablated runs and circuits, on a tiny GPT-2.

The edge run is checked against what it must equal: the model itself with nothing ablated; the corrupted run with
every edge ablated; patching a head's ``hook_z`` (or ``hook_mlp_out``) with its corrupted value when every edge
into it is ablated. EAP's gradients are checked against autograd at hook points that read one receiver's input
alone: ``hook_q_input`` (a head's own query input) and the last ``hook_resid_post`` (the logits' input).
"""

from __future__ import annotations

import json

import pytest
import torch

import bridge
from bridge import attribution
from bridge.analysis import edges

ATOL = 2e-5


def logit_diff(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from public_api_adapters import GPT2Adapter

    from bridge.testing import examples_of, save_tiny_model

    directory = save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path_factory.mktemp("gpt2e"))
    model = bridge.load(directory, attn_implementation="eager")
    generator = torch.Generator().manual_seed(3)
    clean = torch.randint(1, 100, (2, 5), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + 5) % 100 + 1
    corrupted[:, 3] = (clean[:, 3] + 9) % 100 + 1
    return model, clean, corrupted, edges.build_graph(model)


def receivers_of(graph, node):
    return [i for i, r in enumerate(graph.receivers) if r.node == node]


def test_graph_shape(setup):
    model, _, _, graph = setup
    n, h = model.cfg.n_layers, model.cfg.n_heads
    assert len(graph.writers) == 1 + n * (h + 1)  # input, heads and MLPs
    assert len(graph.receivers) == n * (3 * h + 1) + 1  # q/k/v per head, MLPs, logits
    writer = {w.name: u for u, w in enumerate(graph.writers)}
    mlp0 = receivers_of(graph, "m0")[0]
    assert graph.allowed[writer["a0.h1"], mlp0] and not graph.allowed[writer["m0"], receivers_of(graph, "a0.h1")[0]]
    assert graph.allowed[:, -1].all()  # every writer reaches the logits


def test_edge_run_without_ablation_is_the_model(setup):
    model, clean, _, graph = setup
    logits, _, _ = edges._run(model, graph, clean, None)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(clean), atol=ATOL, rtol=0)


def test_edge_run_with_every_edge_ablated_is_the_corrupted_run(setup):
    model, clean, corrupted, graph = setup
    refs = edges.node_writes(model, graph, corrupted)
    logits, _, _ = edges._run(model, graph, clean, None, ablate=graph.allowed.clone(), refs=refs)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(corrupted), atol=ATOL, rtol=0)


@pytest.mark.parametrize("node,hook", [("a1.h2", "blocks.1.attn.hook_z"), ("m0", "blocks.0.hook_mlp_out")])
def test_ablating_every_edge_into_a_node_is_patching_its_output(setup, node, hook):
    model, clean, corrupted, graph = setup
    refs = edges.node_writes(model, graph, corrupted)
    ablate = torch.zeros_like(graph.allowed)
    for r in receivers_of(graph, node):
        ablate[:, r] = graph.allowed[:, r]
    logits, _, _ = edges._run(model, graph, clean, None, ablate=ablate, refs=refs)
    _, corrupted_cache = model.run_with_cache(corrupted, names_filter=hook)
    head = int(node.split("h")[-1]) if node.startswith("a") else None

    def patch(x, hook):
        x = x.clone()
        if head is None:
            return corrupted_cache[hook.name]
        x[:, :, head] = corrupted_cache[hook.name][:, :, head]
        return x

    with torch.no_grad():
        expected = model.run_with_hooks(clean, fwd_hooks=[(hook, patch)])
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


def test_eap_gradients_are_autograd_gradients_at_a_receivers_own_input(setup):
    """EAP: score(u → r) = Σ Δwrite_u · ∂metric/∂input_r. For a head's query, ``hook_q_input`` is that head's own
    copy of the stream; for the logits, the last ``hook_resid_post``."""
    model, clean, corrupted, graph = setup
    scores = attribution.attribute_edges(model, clean, corrupted, logit_diff, method="eap", verbose=False)
    writes = edges.node_writes(model, graph, clean) - edges.node_writes(model, graph, corrupted)  # [U, b, p, d]
    model.set_use_split_qkv_input(True)
    try:
        grads = {}

        def keep(x, hook):
            x.retain_grad()
            grads[hook.name] = x

        logits = model.run_with_hooks(
            corrupted, fwd_hooks=[("blocks.1.hook_q_input", keep), ("blocks.1.hook_resid_post", keep)]
        )
        logit_diff(logits).backward()
    finally:
        model.set_use_split_qkv_input(False)
    head = 2
    q_receiver = next(i for i, r in enumerate(graph.receivers) if r.node == f"a1.h{head}" and r.port == "q")
    expected_q = torch.einsum("ubpd,bpd->u", writes, grads["blocks.1.hook_q_input"].grad[:, :, head])
    expected_out = torch.einsum("ubpd,bpd->u", writes, grads["blocks.1.hook_resid_post"].grad)
    allowed_q = graph.allowed[:, q_receiver]
    torch.testing.assert_close(scores.scores[allowed_q, q_receiver], expected_q[allowed_q], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(scores.scores[:, -1], expected_out, atol=1e-5, rtol=1e-4)
    assert scores.scores[~graph.allowed].isnan().all()


def test_circuit_faithfulness_json_and_picture(setup, tmp_path):
    model, clean, corrupted, _ = setup
    scores = attribution.attribute_edges(model, clean, corrupted, logit_diff, method="eap-ig", steps=3, verbose=False)
    everything = attribution.find_circuit(scores)
    result = attribution.faithfulness(model, everything, clean, corrupted, logit_diff)
    assert result["faithfulness"] == pytest.approx(1.0, abs=1e-4)
    with torch.no_grad():
        assert result["empty"] == pytest.approx(float(logit_diff(model(corrupted))), abs=1e-4)
    small = attribution.find_circuit(scores, n_edges=40)
    assert all(e[0] == "input" or any(e[0] == r.split("<")[0] for _, r, _ in small.edges) for e in small.edges)
    mean = attribution.faithfulness(model, small, clean, corrupted, logit_diff, ablation="mean")
    assert set(mean) == {"circuit", "clean", "empty", "faithfulness"}
    data = json.loads(small.to_json(tmp_path / "circuit.json"))
    assert data["edges"] and data["faithfulness"] == small.faithfulness
    assert json.loads((tmp_path / "circuit.json").read_text()) == data
    pytest.importorskip("matplotlib")
    small.draw(tmp_path / "circuit.png")
    assert (tmp_path / "circuit.png").stat().st_size > 1000
    assert not [n for n, h in model.hook_dict.items() if h.fwd_hooks or h.bwd_hooks]
    assert not model.hook_dict["blocks.0.attn.hook_result"].enabled  # the opt-in results are off again


def test_edge_scores_listing(setup):
    model, clean, corrupted, _ = setup
    scores = attribution.attribute_edges(model, clean, corrupted, logit_diff, method="eap", verbose=False)
    listed = scores.edges()
    assert len(listed) == int(scores.graph.allowed.sum())
    assert abs(listed[0][2]) >= abs(listed[-1][2])
    assert set(scores.node_scores()) == {w.name for w in scores.graph.writers}


def test_an_interrupt_leaves_no_hook_and_no_opt_in_on(setup):
    model, clean, corrupted, _ = setup
    calls = []

    def interrupted(logits):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return logit_diff(logits)

    with pytest.raises(KeyboardInterrupt):
        attribution.attribute_edges(model, clean, corrupted, interrupted, steps=3, verbose=False)
    assert not [n for n, h in model.hook_dict.items() if h.fwd_hooks or h.bwd_hooks]
    assert not model.hook_dict["blocks.1.attn.hook_result"].enabled


def test_a_small_memory_budget_splits_receivers_over_passes_with_the_same_scores(setup):
    model, clean, corrupted, graph = setup
    whole = attribution.attribute_edges(model, clean, corrupted, logit_diff, method="eap", verbose=False)
    assert len(edges._receiver_groups(model, graph, corrupted, 1)) == 3 * model.cfg.n_heads + 1
    split = attribution.attribute_edges(
        model, clean, corrupted, logit_diff, method="eap", verbose=False, memory_budget=1
    )
    torch.testing.assert_close(split.scores, whole.scores, atol=1e-6, rtol=1e-5, equal_nan=True)
