"""``bridge.attribution``: attribution patching against exact patching and autograd, on a tiny GPT-2.

Where the metric is linear in an activation, AtP is exact; integrated gradients add up to the effect of patching
every position (completeness); the QK-fix's pattern change is the pattern a patched run computes; GradDrop's
estimate for a node of the last layer is |AtP|.
"""

from __future__ import annotations

import pytest
import torch

import bridge
from bridge import attribution, patching
from bridge.analysis.attribution import _qk_estimates
from bridge.kernel.errors import BadInputError


def logit_diff(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from public_api_adapters import GPT2Adapter

    from bridge.testing import examples_of, save_tiny_model

    directory = save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path_factory.mktemp("gpt2a"))
    model = bridge.load(directory, attn_implementation="eager")
    generator = torch.Generator().manual_seed(11)
    clean = torch.randint(1, 100, (3, 6), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 5) % 100 + 1
    corrupted[:, 4] = (clean[:, 4] + 9) % 100 + 1
    return model, clean, corrupted


def exact_effect(model, clean, corrupted, name, positions=None):
    """Patch the clean activation of ``name`` at ``positions`` (all if None) by hand; the metric's change."""
    _, cache = model.run_with_cache(clean, names_filter=name)

    def patch(x, hook):
        x = x.clone()
        where = slice(None) if positions is None else positions
        x[:, where] = cache[name][:, where]
        return x

    with torch.no_grad():
        return float(logit_diff(model.run_with_hooks(corrupted, fwd_hooks=[(name, patch)]))) - float(
            logit_diff(model(corrupted))
        )


def test_atp_is_exact_where_the_metric_is_linear(setup):
    """The logits are linear in ln_final's output: AtP there equals patching, position by position."""
    model, clean, corrupted = setup
    name = "ln_final.hook_normalized"
    found = attribution.attribute(model, clean, corrupted, logit_diff, hooks=[name], method="atp", verbose=False)
    exact = torch.tensor([exact_effect(model, clean, corrupted, name, [p]) for p in range(clean.shape[1])])
    torch.testing.assert_close(found[name], exact, atol=1e-5, rtol=0)


def test_atp_multiplies_the_autograd_gradient(setup):
    model, clean, corrupted = setup
    name = "blocks.1.attn.hook_z"
    found = attribution.attribute(model, clean, corrupted, logit_diff, hooks=[name], method="atp", verbose=False)
    _, clean_cache = model.run_with_cache(clean, names_filter=name)
    corrupted_z = None

    def keep(x, hook):
        nonlocal corrupted_z
        corrupted_z = x
        x.retain_grad()

    logits = model.run_with_hooks(corrupted, fwd_hooks=[(name, keep)])
    logit_diff(logits).backward()
    expected = ((clean_cache[name] - corrupted_z.detach()) * corrupted_z.grad).sum(dim=(0, 3))  # [pos, head]
    torch.testing.assert_close(found[name], expected, atol=1e-6, rtol=1e-5)
    assert found[name].shape == (clean.shape[1], model.cfg.n_heads)


def test_integrated_gradients_add_up_to_patching_every_position(setup):
    """Completeness: the IG estimates of all positions sum to the effect of patching all of them (within the
    midpoint rule's error, ~1/steps² of the curvature)."""
    model, clean, corrupted = setup
    name = "blocks.1.hook_resid_pre"
    found = attribution.attribute(
        model, clean, corrupted, logit_diff, hooks=[name], method="ig", steps=32, verbose=False
    )
    total = exact_effect(model, clean, corrupted, name)
    assert abs(float(found[name].sum()) - total) < 1e-3 * max(1.0, abs(total))


def test_integrated_gradients_on_inputs_add_up_at_the_embeddings(setup):
    model, clean, corrupted = setup
    name = "blocks.0.hook_resid_pre"
    found = attribution.attribute(
        model, clean, corrupted, logit_diff, hooks=[name], method="ig-inputs", steps=32, verbose=False
    )
    total = exact_effect(model, clean, corrupted, name)
    assert abs(float(found[name].sum()) - total) < 1e-3 * max(1.0, abs(total))


def test_qk_fix_uses_the_pattern_a_patched_run_computes(setup):
    model, clean, corrupted = setup
    layer, name = 1, "blocks.1.attn.hook_k"
    pattern_name = f"blocks.{layer}.attn.hook_pattern"
    _, clean_cache = model.run_with_cache(clean, names_filter=name)
    grads = torch.randn((2, *model.run_with_cache(corrupted, names_filter=pattern_name)[1][pattern_name].shape))
    found = _qk_estimates(model, clean_cache[name], corrupted, name, grads, budget=1)  # one cell per pass
    _, base = model.run_with_cache(corrupted, names_filter=pattern_name)
    for pos, head in [(2, 0), (4, 3), (0, 1)]:

        def patch(k, hook, pos=pos, head=head):
            k = k.clone()
            k[:, pos, head] = clean_cache[name][:, pos, head]
            return k

        seen = {}
        model.run_with_hooks(
            corrupted,
            fwd_hooks=[(name, patch), (pattern_name, lambda x, hook, seen=seen: seen.__setitem__("p", x.detach()))],
        )
        delta = seen["p"] - base[pattern_name]
        expected = torch.einsum("bhqk,dbhqk->d", delta, grads)
        torch.testing.assert_close(found[:, pos, head], expected, atol=1e-5, rtol=1e-4)


def test_grad_drop_of_a_last_layer_write_is_its_atp_magnitude(setup):
    """With two layers, dropping layer 0's writes leaves the gradient at a layer-1 write as it is and dropping
    layer 1's zeroes it: AtP* there is |AtP| / (L - 1) · 1 = |AtP|."""
    model, clean, corrupted = setup
    name = "blocks.1.hook_mlp_out"
    star = attribution.attribute(model, clean, corrupted, logit_diff, hooks=[name], method="atp*", verbose=False)
    plain = attribution.attribute(model, clean, corrupted, logit_diff, hooks=[name], method="atp", verbose=False)
    assert not star.signed
    torch.testing.assert_close(star[name], plain[name].abs(), atol=1e-6, rtol=1e-5)


def test_atp_star_runs_the_qk_fix_on_queries_and_keys(setup):
    model, clean, corrupted = setup
    hooks = ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.0.hook_resid_pre"]
    found = attribution.attribute(model, clean, corrupted, logit_diff, hooks=hooks, method="atp*", verbose=False)
    assert found["blocks.1.attn.hook_q"].shape == (clean.shape[1], model.cfg.n_heads)
    assert all((v >= 0).all() for v in found.values())
    with torch.no_grad():
        base = float(logit_diff(model(corrupted)))
    exact = (
        patching.get_act_patch_attn_head_k_by_pos(
            model, corrupted, model.run_with_cache(clean)[1], logit_diff, verbose=False
        )
        - base
    )
    assert attribution.rank_correlation(found.stack("k"), exact.abs()) > 0.5


def test_stack_lays_estimates_out_as_the_sweeps(setup):
    model, clean, corrupted = setup
    found = attribution.attribute(model, clean, corrupted, logit_diff, method="atp", verbose=False)
    assert found.stack("resid_pre").shape == (model.cfg.n_layers, clean.shape[1])
    assert found.stack("z").shape == (model.cfg.n_layers, clean.shape[1], model.cfg.n_heads)
    patterns = attribution.attribute(
        model, clean, corrupted, logit_diff, hooks=lambda n: n.endswith("hook_pattern"), method="atp", verbose=False
    )
    assert patterns.stack("pattern").shape == (model.cfg.n_layers, model.cfg.n_heads, clean.shape[1])
    assert found.clean_metric == pytest.approx(float(logit_diff(model(clean))), abs=1e-5)


def test_bad_arguments(setup):
    model, clean, corrupted = setup
    with pytest.raises(BadInputError, match="method must be"):
        attribution.attribute(model, clean, corrupted, logit_diff, method="magic")
    with pytest.raises(BadInputError, match="one shape"):
        attribution.attribute(model, clean, corrupted[:, :4], logit_diff)
    with pytest.raises(BadInputError, match="unknown hook points"):
        attribution.attribute(model, clean, corrupted, logit_diff, hooks=["blocks.9.hook_resid_pre"])
    with pytest.raises(BadInputError, match="scalar"):
        attribution.attribute(model, clean, corrupted, lambda x: x[:, -1, 0], method="atp", verbose=False)
    assert not [n for n, h in model.hook_dict.items() if h.fwd_hooks or h.bwd_hooks]


def test_rank_correlation_and_top_k():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert attribution.rank_correlation(a, a * 10) == pytest.approx(1.0)
    assert attribution.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert attribution.rank_correlation(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(
        0.8660254, abs=1e-6
    )
    assert attribution.top_k_agreement(torch.tensor([5.0, 0.1, -4.0, 0.2]), torch.tensor([3.0, 0.0, -6.0, 1.0]), 2) == 1
    assert attribution.top_k_agreement(torch.tensor([5.0, 4.0, 0.0]), torch.tensor([0.0, 1.0, 2.0]), 1) == 0


@pytest.mark.parametrize("method", ["atp", "atp*", "ig", "ig-inputs"])
def test_an_interrupt_leaves_no_hook_attached(setup, method):
    model, clean, corrupted = setup

    def interrupted(logits):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        attribution.attribute(model, clean, corrupted, interrupted, method=method, verbose=False)
    assert not [n for n, h in model.hook_dict.items() if h.fwd_hooks or h.bwd_hooks]
    assert not [b for b in model.hf_model.transformer.h if "forward" in b.__dict__]
