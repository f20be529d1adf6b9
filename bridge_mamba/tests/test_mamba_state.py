"""The opt-in per-step SSM state: equal to HF's cached state, and patching it means setting the
state, checked against HF's own recurrent cache edited by hand."""

import copy

import pytest
import torch

from bridge import OptInHookError
from bridge_mamba import Mamba2Adapter, MambaAdapter

ADAPTERS = [MambaAdapter, Mamba2Adapter]
ATOL = 1e-4


def _state(layer: int) -> str:
    return f"blocks.{layer}.mixer.hook_ssm_state"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_state_hook_is_opt_in_and_costs_nothing_in_accuracy(pair_for, adapter):
    pair = pair_for(adapter)
    model, tokens = pair.bridge, pair.tokens()
    with pytest.raises(OptInHookError, match="set_opt_in"):
        model.add_hook(_state(0), lambda t, hook: None)
    _, cache = model.run_with_cache(tokens)
    assert not any(name.endswith("hook_ssm_state") for name in cache)
    model.set_opt_in("hook_ssm_state", True)
    logits, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(logits, pair.reference(tokens).logits, atol=ATOL, rtol=0)
    assert all(_state(layer) in cache for layer in range(model.cfg.n_layers))


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_last_state_equals_hf_cache_params(pair_for, adapter):
    pair = pair_for(adapter)
    model, tokens = pair.bridge, pair.tokens(2, 10)
    model.set_opt_in("hook_ssm_state", True)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_ssm_state"))
    hf_cache = pair.reference(tokens, use_cache=True).cache_params
    for layer in range(model.cfg.n_layers):
        expected = hf_cache.get_recurrent_state(layer)
        torch.testing.assert_close(cache[_state(layer)][:, -1], expected, atol=1e-6, rtol=1e-5)


def _hf_continued(reference, tokens: torch.Tensor, t: int, layer: int, edit) -> torch.Tensor:
    """HF alone: run ``tokens[:, :t+1]`` with a cache, ``edit`` layer ``layer``'s recurrent state in
    the cache, then decode the remaining tokens one at a time. Logits of every position."""
    out = reference(tokens[:, : t + 1], use_cache=True)
    cache, logits = out.cache_params, [out.logits]
    recurrent = cache.layers[layer].recurrent_states
    recurrent[0] = edit(recurrent[0])
    for i in range(t + 1, tokens.shape[1]):
        logits.append(reference(tokens[:, i : i + 1], cache_params=cache, use_cache=True).logits)
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("value", ["zero", "random"])
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_setting_the_state_at_one_position_equals_editing_hf_cache(pair_for, adapter, layer, value):
    """Set ``h_t`` of one layer; the recurrence carries it to later positions. To isolate the
    recurrence, ``hook_y`` at ``t`` is restored to its clean value (HF's prefill computed
    ``y_t`` from the unedited state), so the result must equal HF decoding from an edited cache."""
    pair = pair_for(adapter)
    model, tokens, t = pair.bridge, pair.tokens(2, 9), 5
    model.set_opt_in("hook_ssm_state", True)
    _, clean = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.mixer.hook_y")
    generator = torch.Generator().manual_seed(layer)

    def new_state(h: torch.Tensor) -> torch.Tensor:
        if value == "zero":
            return torch.zeros_like(h)
        return torch.randn(h.shape, generator=generator) * 10 * h.std()

    target = None  # the state set at t, reused for HF's cache

    def set_state(states: torch.Tensor, hook) -> torch.Tensor:
        nonlocal target
        target = new_state(states[:, t])
        states = states.clone()
        states[:, t] = target
        return states

    def restore_y(y: torch.Tensor, hook) -> torch.Tensor:
        y = y.clone()
        y[:, t] = clean[hook.name][:, t]
        return y

    patched = model.run_with_hooks(
        tokens,
        fwd_hooks=[(_state(layer), set_state), (f"blocks.{layer}.mixer.hook_y", restore_y)],
    )
    expected = _hf_continued(pair.reference, tokens, t, layer, lambda h: target.clone())
    torch.testing.assert_close(patched, expected, atol=1e-5, rtol=0)
    unpatched = pair.reference(tokens).logits
    assert (patched[:, t + 1 :] - unpatched[:, t + 1 :]).abs().max() > 1e-4
    torch.testing.assert_close(patched[:, : t + 1], unpatched[:, : t + 1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_zeroing_every_state_equals_zeroing_B(pair_for, adapter):
    """With all states of a layer set to zero, the SSM contributes nothing: the same as B = 0."""
    pair = pair_for(adapter)
    model, tokens = pair.bridge, pair.tokens()
    model.set_opt_in("hook_ssm_state", True)
    got = model.run_with_hooks(tokens, fwd_hooks=[(_state(1), lambda h, hook: torch.zeros_like(h))])
    reference = copy.deepcopy(pair.reference)
    mixer = reference.backbone.layers[1].mixer
    with torch.no_grad():
        if adapter is MambaAdapter:
            r, n = mixer.time_step_rank, mixer.ssm_state_size
            mixer.x_proj.weight[r : r + n] = 0.0
        else:
            B = slice(mixer.intermediate_size, mixer.intermediate_size + mixer.n_groups * mixer.ssm_state_size)
            mixer.conv1d.weight[B] = 0.0
            mixer.conv1d.bias[B] = 0.0
    torch.testing.assert_close(got, reference(tokens).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_state_gradient_is_the_total_derivative_through_the_recurrence(pair_for, adapter):
    """A backward hook on the last layer's ``hook_ssm_state`` receives dL/dh_t including the path through
    every later state: equal to HF's gradient w.r.t. its cached state when decoding on from ``t``."""
    pair = pair_for(adapter)
    model, tokens, t = pair.bridge, pair.tokens(1, 8), 4
    layer = model.cfg.n_layers - 1
    model.set_opt_in("hook_ssm_state", True)
    grads = {}
    logits = model.run_with_hooks(tokens, bwd_hooks=[(_state(layer), lambda g, hook: grads.__setitem__("g", g))])
    logits[:, t + 1 :].sum().backward()
    leaf = {}

    def make_leaf(h: torch.Tensor) -> torch.Tensor:
        leaf["h"] = h.detach().requires_grad_(True)
        return leaf["h"].clone()

    reference = pair.reference.requires_grad_(False)  # HF's decode updates its state in place
    continued = _hf_continued(reference, tokens, t, layer, make_leaf)
    (expected,) = torch.autograd.grad(continued[:, t + 1 :].sum(), leaf["h"])
    torch.testing.assert_close(grads["g"][:, t], expected, atol=1e-5, rtol=1e-4)
    assert expected.abs().max() > 1e-4


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_backward_hooks_everywhere_leave_parameter_gradients_alone(pair_for, adapter):
    """With a backward hook on every hook point (the state's included), parameters get HF's gradients:
    the re-expressed mixers backpropagate like HF's, and re-running the recurrence counts nothing twice."""
    pair = pair_for(adapter)
    model, tokens = pair.bridge, pair.tokens(1, 7)
    model.set_opt_in("hook_ssm_state", True)
    seen = set()
    loss = model.run_with_hooks(
        tokens, return_type="loss", bwd_hooks=[(lambda n: True, lambda g, hook: seen.add(hook.name))]
    )
    loss.backward()
    assert seen == set(model.hook_dict)
    reference = pair.reference
    reference(tokens, labels=tokens, use_cache=False).loss.backward()
    for (name, got), (_, expected) in zip(model.hf_model.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(got.grad, expected.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_patching_the_state_in_place_sets_it_too(pair_for, adapter, grad):
    """TransformerLens-style in-place hooks (``t[...] = v``, return None) mean the same as returning the tensor."""
    pair = pair_for(adapter)
    model, tokens = pair.bridge, pair.tokens(2, 8)
    model.set_opt_in("hook_ssm_state", True)

    def returned(h: torch.Tensor, hook) -> torch.Tensor:
        h = h.clone()
        h[:, 3] = 0.0
        return h

    def in_place(h: torch.Tensor, hook) -> None:
        h[:, 3] = 0.0

    with torch.set_grad_enabled(grad):
        expected = model.run_with_hooks(tokens, fwd_hooks=[(_state(0), returned)])
        got = model.run_with_hooks(tokens, fwd_hooks=[(_state(0), in_place)])
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert (expected - pair.reference(tokens, use_cache=False).logits).abs().max() > 1e-4
