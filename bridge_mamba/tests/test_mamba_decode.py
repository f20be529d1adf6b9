"""Stateful decoding with ``cache_params``: every hook fires on every step with ``[b, 1, ...]``
shapes, with the values (and the effect of patches) of the same positions in a full forward."""

from collections import defaultdict

import pytest
import torch

from bridge_mamba import Mamba2Adapter, MambaAdapter

ADAPTERS = [MambaAdapter, Mamba2Adapter]


def _decode(model, tokens: torch.Tensor, prefill: int) -> torch.Tensor:
    """Run ``tokens[:, :prefill]`` with a cache, then the rest one token at a time; logits ``[b, p, vocab]``."""
    hf = model.hf_model if hasattr(model, "hf_model") else model
    out = hf(input_ids=tokens[:, :prefill], use_cache=True)
    cache, logits = out.cache_params, [out.logits]
    for i in range(prefill, tokens.shape[1]):
        step = hf(input_ids=tokens[:, i : i + 1], cache_params=cache, use_cache=True, cache_position=torch.tensor([i]))
        logits.append(step.logits)
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_every_hook_fires_on_every_decode_step_with_full_forward_values(pair_for, adapter):
    pair = pair_for(adapter)
    model, tokens, prefill = pair.bridge, pair.tokens(2, 9), 5
    model.set_opt_in("hook_ssm_state", True)
    _, full = model.run_with_cache(tokens)
    calls: dict[str, list[torch.Tensor]] = defaultdict(list)
    with model.hooks(fwd_hooks=[(lambda n: True, lambda t, hook: calls[hook.name].append(t.detach()))]):
        logits = _decode(model, tokens, prefill)
    torch.testing.assert_close(logits, pair.reference(tokens).logits, atol=1e-4, rtol=0)
    assert set(calls) == set(model.hook_dict)
    for name, values in calls.items():
        assert len(values) == 1 + tokens.shape[1] - prefill, name
        assert all(v.shape[:2] == (2, 1) for v in values[1:]), name
        torch.testing.assert_close(torch.cat(values, dim=1), full[name], atol=1e-5, rtol=1e-5, msg=name)


PATCHES = {
    "mixer.hook_conv": lambda t: t * 0,
    "mixer.hook_dt": lambda t: t * 3,
    "mixer.hook_y": lambda t: -t,
    "mixer.hook_ssm_state": lambda t: t * 0,
    "mixer.hook_ssm_out": lambda t: t * 0.5,
}


@pytest.mark.parametrize("hook", list(PATCHES))
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_patching_a_decode_step_equals_patching_that_position_of_a_full_forward(pair_for, adapter, hook):
    pair = pair_for(adapter)
    model, tokens, prefill, position = pair.bridge, pair.tokens(2, 9), 5, 6
    model.set_opt_in("hook_ssm_state", True)
    name, patch = f"blocks.0.{hook}", PATCHES[hook]

    def at_position(t: torch.Tensor, hook) -> torch.Tensor:
        t = t.clone()
        t[:, position] = patch(t[:, position])
        return t

    expected = model.run_with_hooks(tokens, fwd_hooks=[(name, at_position)])
    offset = 0  # positions the model has seen so far

    def at_step(t: torch.Tensor, hook) -> torch.Tensor | None:
        nonlocal offset
        start, offset = offset, offset + t.shape[1]
        return patch(t) if t.shape[1] == 1 and start == position else None

    with model.hooks(fwd_hooks=[(name, at_step)]):
        got = _decode(model, tokens, prefill)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (expected - pair.reference(tokens).logits).abs().max() > 1e-4


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_hf_generate_fires_hooks_each_step_and_generates_the_same_tokens(pair_for, adapter):
    pair = pair_for(adapter)
    model, prompt = pair.bridge, pair.tokens(2, 6)
    model.set_opt_in("hook_ssm_state", True)
    kwargs = {"max_new_tokens": 4, "do_sample": False, "use_cache": True, "pad_token_id": 0}
    expected = pair.reference.generate(prompt, **kwargs)
    shapes: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    with model.hooks(fwd_hooks=[(lambda n: True, lambda t, hook: shapes[hook.name].append(tuple(t.shape)))]):
        got = model.hf_model.generate(prompt, **kwargs)
    torch.testing.assert_close(got, expected)
    assert set(shapes) == set(model.hook_dict)
    for name, seen in shapes.items():
        assert [s[:2] for s in seen] == [(2, 6), (2, 1), (2, 1), (2, 1)], name


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_multi_token_continuation_follows_hf(pair_for, adapter):
    """A chunk of several tokens after a cached prefix: the hooked mixers do what HF's do (Mamba-2
    starts the chunked scan from the cached state; HF's Mamba-1 scan restarts from a zero state)."""
    pair = pair_for(adapter)
    model, tokens = pair.bridge, pair.tokens(2, 10)
    model.set_opt_in("hook_ssm_state", True)

    def prefix_then_chunk(hf) -> torch.Tensor:
        first = hf(input_ids=tokens[:, :6], use_cache=True)
        rest = hf(input_ids=tokens[:, 6:], cache_params=first.cache_params, use_cache=True)
        return torch.cat([first.logits, rest.logits], dim=1)

    expected = prefix_then_chunk(pair.reference)
    with model.hooks(fwd_hooks=[(lambda n: True, lambda t, hook: None)]):
        got = prefix_then_chunk(model.hf_model)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    if adapter is Mamba2Adapter:
        torch.testing.assert_close(got, pair.reference(tokens).logits, atol=1e-4, rtol=0)
