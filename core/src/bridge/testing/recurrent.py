"""Checks for hybrids and recurrent layers, against HF's own view of each layer.

- ``check_layer_kinds``: each layer has the hooks of its kind (``cfg.layer_types``), and HF agrees on the kind:
  its ``attentions`` come from exactly the bridge's attention layers (and equal their ``hook_pattern``), its
  cache keeps a recurrent state for exactly the bridge's recurrent layers;
- ``check_recurrent_states``: each recurrent layer's per-position state hook equals the state HF's cache holds
  after HF decodes the same tokens one at a time (a step-by-step reference computed by HF's own modules);
- ``check_state_patching``: setting the state at one position changes the later positions exactly as HF decoding
  on from a cache whose state was set to the same value;
- ``check_state_hooks_each_step`` (generation): the state hooks fire on every ``generate`` step and equal the
  full-sequence run's states at the same positions.

A recurrent layer is a component with a ``recurrent_state`` attribute ``(state hook, read-out hook)``: the
names of its opt-in per-position state hook (``[b, p, *state]``, each position's state in the layout HF's cache
keeps it, ``get_recurrent_state``) and of the hook reading that state out at the same position; its HF module's
``layer_idx`` is the layer's index in HF's cache.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from bridge.kernel.components.attention import Attention
from bridge.testing.compare import CheckNotRun, expect_close, fail, max_diff

if TYPE_CHECKING:
    from bridge.testing.pair import Pair

#: The child a layer of each kind keeps its token mixer (or its only MLP) under, by the naming rule.
KIND_CHILDREN = {
    "attention": "attn",
    "mamba": "mixer",
    "mamba2": "mixer",
    "short_conv": "mixer",
    "gated_deltanet": "linear_attn",
    "lightning_attention": "linear_attn",
    "mlp": "mlp",
    "moe": "mlp",
}
#: The block hook holding what each kind's sublayer adds to the residual stream.
KIND_WRITES = {
    "attn": "hook_attn_out",
    "mixer": "hook_mixer_out",
    "linear_attn": "hook_mixer_out",
    "mlp": "hook_mlp_out",
}
#: Kinds whose layers keep a recurrent state (HF caches it; the bridge has a per-position state hook).
RECURRENT_KINDS = ("mamba", "mamba2", "gated_deltanet", "lightning_attention")
TOKEN_MIXERS = ("attn", "mixer", "linear_attn")


@dataclass(frozen=True)
class RecurrentLayer:
    """One recurrent component: its block, its state hook and read-out hook names, its index in HF's cache."""

    block: int
    component: torch.nn.Module
    state: str
    readout: str
    cache_index: int


def recurrent_layers(pair: Pair) -> list[RecurrentLayer]:
    """Every component of the bridge with a ``recurrent_state``, in block order."""
    found = []
    for layer, block in enumerate(pair.bridge.blocks):
        for module in block.modules():
            names = getattr(module, "recurrent_state", None)
            if names is None or module is block:
                continue
            state, readout = (getattr(module, name).name for name in names)
            found.append(RecurrentLayer(layer, module, state, readout, module.hf.layer_idx))
    return found


def _kinds(pair: Pair) -> list[str]:
    from bridge.testing.checks import not_applicable

    kinds = pair.bridge.cfg.layer_types
    if kinds is None:
        not_applicable(f"{pair.bridge.cfg.architecture} has one kind of layer (cfg.layer_types is None)")
        return []
    if len(kinds) != len(pair.bridge.blocks):
        fail(f"cfg.layer_types has {len(kinds)} entries for {len(pair.bridge.blocks)} blocks: {kinds}")
    return list(kinds)


def check_layer_kinds(pair: Pair) -> None:
    """Every layer has the hooks of its kind (``cfg.layer_types``, one kind per block, ``"+"`` joining kinds side
    by side in one layer): its token mixer under the child the naming rule gives (``attn`` for attention, core's
    ``Attention``; ``mixer`` for SSMs and convolutions; ``linear_attn`` for linear attention), no token mixer of
    another kind, the write hook of each part (``hook_attn_out``, ``hook_mixer_out``, ``hook_mlp_out``), a
    recurrent state hook on recurrent kinds, and the same hooks as every other layer of its kind. Against HF: the
    reference returns ``attentions`` for exactly the attention layers, equal to their ``hook_pattern`` in order,
    and its cache keeps a recurrent state for exactly the recurrent layers."""
    kinds = _kinds(pair)
    model = pair.bridge
    problems: list[str] = []
    by_kind: dict[str, tuple[str, set[str]]] = {}
    for layer, (block, kind) in enumerate(zip(model.blocks, kinds, strict=True)):
        parts = kind.split("+")
        unknown = [p for p in parts if p not in KIND_CHILDREN]
        if unknown:
            fail(f"blocks.{layer}: cfg.layer_types kind {kind!r} has parts {unknown} the kit does not know")
        children = dict(block.named_children())
        wanted = {KIND_CHILDREN[p] for p in parts}
        mixers = {c for c in TOKEN_MIXERS if c in children}
        wanted_mixers = wanted & set(TOKEN_MIXERS)
        if mixers != wanted_mixers:
            problems.append(
                f"blocks.{layer} ({kind}): token mixers {sorted(mixers)}, its kind has {sorted(wanted_mixers)}"
            )
        for child in wanted:
            if child not in children:
                problems.append(f"blocks.{layer} ({kind}): no {child!r} child")
            elif not hasattr(block, KIND_WRITES[child]):
                problems.append(f"blocks.{layer} ({kind}): no {KIND_WRITES[child]} for its {child!r}")
        if "attention" in parts and not isinstance(children.get("attn"), Attention):
            problems.append(
                f"blocks.{layer} ({kind}): its attn is {type(children.get('attn')).__name__}, not Attention"
            )
        for part in parts:
            child = children.get(KIND_CHILDREN[part])
            if part in RECURRENT_KINDS and child is not None and getattr(child, "recurrent_state", None) is None:
                problems.append(f"blocks.{layer} ({kind}): its {KIND_CHILDREN[part]} has no recurrent state hook")
        prefix = f"blocks.{layer}."
        hooks = {
            n[len(prefix) :]
            for n in model.hook_dict
            if n.startswith(prefix) and n[len(prefix) :].startswith(TOKEN_MIXERS)
        }
        first = by_kind.setdefault(kind, (prefix, hooks))
        if first[1] != hooks:
            problems.append(
                f"blocks.{layer} and {first[0]}are both {kind!r} but their token mixers' hooks differ: "
                f"{sorted(hooks ^ first[1])}"
            )
    if problems:
        fail("layer kinds: " + "; ".join(problems))
    _check_hf_agrees(pair, kinds)


def _check_hf_agrees(pair: Pair, kinds: list[str]) -> None:
    """HF's attentions come from the attention layers (equal to their patterns), its cache's recurrent states
    from the recurrent layers."""
    tokens = pair.tokens()
    attention_layers = [i for i, kind in enumerate(kinds) if "attention" in kind.split("+")]
    with pair.on_path():
        _, cache = pair.bridge.run_with_cache(
            tokens, return_type=None, names_filter=lambda n: n.endswith("hook_pattern")
        )
    ref = pair.run_reference(tokens, output_attentions=True)
    attentions = [a for a in (getattr(ref, "attentions", None) or ()) if a is not None]
    if len(attentions) == len(kinds) != len(attention_layers):  # one entry per layer (MiniMax: its lightning
        attentions = [attentions[i] for i in attention_layers]  # layers return their state there): by index
    if len(attentions) != len(attention_layers):
        fail(
            f"HF returns {len(attentions)} attention patterns, the bridge has {len(attention_layers)} attention "
            f"layers ({attention_layers}) by cfg.layer_types"
        )
    for layer, expected in zip(attention_layers, attentions, strict=True):
        name = f"blocks.{layer}.attn.hook_pattern"
        expect_close(cache[name], expected, f"{name} vs HF's attentions of its attention layers, in order")
    hf_cache = _reference_cache(pair, tokens)
    for layer, kind in enumerate(kinds):
        recurrent = any(p in RECURRENT_KINDS for p in kind.split("+"))
        has_state = _has_recurrent_state(hf_cache, layer)
        if recurrent != has_state:
            fail(
                f"blocks.{layer} is {kind!r} by cfg.layer_types, but HF's cache "
                f"{'keeps' if has_state else 'keeps no'} recurrent state for layer {layer}"
            )


def recurrent_state_of(cache: Any, layer: int) -> Any:
    """The recurrent state HF's ``cache`` keeps for ``layer`` (``get_recurrent_state``; MiniMax's cache keeps it
    apart, under ``get_linear_cache``), ``None`` where it keeps none."""
    get = getattr(cache, "get_linear_cache", None) or cache.get_recurrent_state  # MiniMax's cache has both
    state = get(layer)
    return state if isinstance(state, torch.Tensor) else None


def _has_recurrent_state(cache: Any, layer: int) -> bool:
    try:
        return recurrent_state_of(cache, layer) is not None
    except (ValueError, IndexError, AttributeError):
        return False


def _cache_argument(reference: torch.nn.Module) -> str:
    """The keyword the reference takes its cache back under (``past_key_values``; Mamba's ``cache_params``)."""
    parameters = inspect.signature(reference.forward).parameters
    return "past_key_values" if "past_key_values" in parameters else "cache_params"


def _positions(pair: Pair, tokens: torch.Tensor, start: int) -> dict[str, torch.Tensor]:
    """``position_ids`` for ``tokens`` placed from position ``start`` on, where the reference takes them (as
    ``generate`` passes them: some HF models number a cached call's tokens from 0 when given none, e.g. Bamba)."""
    if "position_ids" not in inspect.signature(pair.reference.forward).parameters:
        return {}
    positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
    return {"position_ids": positions.expand(tokens.shape[0], -1)}


def _run_cached(pair: Pair, tokens: torch.Tensor, start: int, cache: Any) -> tuple[Any, Any]:
    """The reference on ``tokens`` (positions ``start…``) with ``cache`` (``None``: a new one): (output, cache)."""
    kwargs: dict[str, Any] = {"use_cache": True, **_positions(pair, tokens, start)}
    if cache is not None:
        kwargs[_cache_argument(pair.reference)] = cache
    with torch.no_grad():
        out = pair.reference(tokens, **kwargs)
    found = getattr(out, "past_key_values", None)
    return out, (found if found is not None else out.cache_params)


def _reference_cache(pair: Pair, tokens: torch.Tensor) -> Any:
    """The cache after the reference has run on ``tokens`` (a new cache)."""
    return _run_cached(pair, tokens, 0, None)[1]


def _stepped(pair: Pair, tokens: torch.Tensor, start: int = 1, cache: Any = None) -> Iterator[tuple[int, Any, Any]]:
    """HF decoding ``tokens`` one at a time after a prefill of ``tokens[:, :start]`` (or from ``cache``, holding
    those): yields ``(position, cache, logits [b, 1, vocab])`` after each position from ``start - 1`` on."""
    if cache is None:
        out, cache = _run_cached(pair, tokens[:, :start], 0, None)
        yield start - 1, cache, out.logits[:, -1:]
    for t in range(start, tokens.shape[1]):
        out, cache = _run_cached(pair, tokens[:, t : t + 1], t, cache)
        yield t, cache, out.logits


@contextlib.contextmanager
def _states_enabled(pair: Pair, layers: list[RecurrentLayer]) -> Iterator[None]:
    names = sorted({layer.state for layer in layers})
    for name in names:
        pair.bridge.set_opt_in(name, True)
    try:
        yield
    finally:
        for name in names:
            pair.bridge.set_opt_in(name, False)


def _layers(pair: Pair) -> list[RecurrentLayer]:
    from bridge.testing.checks import not_applicable

    layers = recurrent_layers(pair)
    if not layers:
        not_applicable(f"{pair.bridge.cfg.architecture} has no layer with a recurrent state")
    if not pair.has_head:
        not_applicable(f"{pair.bridge.cfg.architecture} has no LM head to decode with")
    return layers


def _scaled_tolerance(expected: torch.Tensor, tolerance: float = 1e-5) -> float:
    """``tolerance`` relative to the largest magnitude in ``expected`` (states sum many fp32 terms)."""
    return tolerance * max(1.0, expected.abs().max().item())


def check_recurrent_states(pair: Pair, pos: int = 8) -> None:
    """Each recurrent layer's state hook at position ``t`` equals the recurrent state in HF's cache after HF has
    decoded ``tokens[:, :t + 1]`` one token at a time (``get_recurrent_state``), for every ``t``."""
    layers = _layers(pair)
    tokens = pair.tokens(2, pos, seed=3)
    with _states_enabled(pair, layers), torch.no_grad():
        _, cache = pair.bridge.run_with_cache(tokens, return_type=None, names_filter=[layer.state for layer in layers])
    for t, hf_cache, _ in _stepped(pair, tokens):
        for layer in layers:
            expected = recurrent_state_of(hf_cache, layer.cache_index).float()
            got = cache[layer.state][:, t].float()
            what = (
                f"{layer.state}[:, {t}] vs HF's cached state of layer {layer.cache_index} after decoding {t + 1} tokens"
            )
            expect_close(got, expected, what, tolerance=_scaled_tolerance(expected))


def check_state_patching(pair: Pair, pos: int = 9, t: int = 4) -> None:
    """Setting a recurrent layer's state at position ``t`` (its read-out at ``t`` held at the clean value, as HF's
    prefill computed it from the clean state) gives the logits of HF decoding positions ``t + 1…`` from a cache
    whose state for that layer was set to the same value; and it moves the later positions."""
    layers = _layers(pair)
    tokens = pair.tokens(2, pos, seed=4)
    generator = torch.Generator().manual_seed(5)
    unpatched = pair.reference_output(tokens)
    with _states_enabled(pair, layers):
        for layer in layers:
            with torch.no_grad():
                _, clean = pair.bridge.run_with_cache(
                    tokens, return_type=None, names_filter=[layer.state, layer.readout]
                )
            state = clean[layer.state][:, t]
            target = torch.randn(state.shape, generator=generator).to(state.dtype) * 10 * state.float().std().item()

            def set_state(states: torch.Tensor, hook: Any, target: torch.Tensor = target) -> torch.Tensor:
                states = states.clone()
                states[:, t] = target
                return states

            def hold_readout(y: torch.Tensor, hook: Any, clean_y: torch.Tensor = clean[layer.readout]) -> torch.Tensor:
                y = y.clone()
                y[:, t] = clean_y[:, t]
                return y

            with torch.no_grad():
                got = pair.bridge.run_with_hooks(
                    tokens, return_type="logits", fwd_hooks=[(layer.state, set_state), (layer.readout, hold_readout)]
                )
            prefill = _reference_cache(pair, tokens[:, : t + 1])
            stored = recurrent_state_of(prefill, layer.cache_index)
            stored.copy_(target.to(stored.dtype))
            later = [logits for _, _, logits in _stepped(pair, tokens, start=t + 1, cache=prefill)]
            expected = torch.cat([unpatched[:, : t + 1], *later], dim=1)
            what = f"logits with {layer.state}[:, {t}] set vs HF decoding on from a cache with that state"
            expect_close(got, expected, what, tolerance=_scaled_tolerance(expected))  # the set state is large
            if not max_diff(got[:, t + 1 :], unpatched[:, t + 1 :], what) > 1e-3:
                raise CheckNotRun(f"setting {layer.state} at position {t} barely moves the later logits")


def check_state_hooks_each_step(pair: Pair, pos: int = 5, new: int = 4) -> None:
    """With every recurrent state hook enabled, ``generate`` fires every hook once per step and the stacked
    per-step values (states included) equal a full forward over the output."""
    from bridge.testing.generation import check_every_hook_fires_each_step

    layers = recurrent_layers(pair)
    if not layers:
        from bridge.testing.checks import not_applicable

        not_applicable(f"{pair.bridge.cfg.architecture} has no layer with a recurrent state")
    with _states_enabled(pair, layers):
        check_every_hook_fires_each_step(pair, pos, new)


#: The kit's checks for models whose layers differ or keep a recurrent state (``NotApplicable`` elsewhere).
HYBRID_CHECKS = (check_layer_kinds, check_recurrent_states, check_state_patching)

__all__ = [
    "HYBRID_CHECKS",
    "KIND_CHILDREN",
    "RECURRENT_KINDS",
    "RecurrentLayer",
    "check_layer_kinds",
    "check_recurrent_states",
    "check_state_hooks_each_step",
    "check_state_patching",
    "recurrent_layers",
]
