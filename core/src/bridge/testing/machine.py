"""The hook-lifecycle state machine (needs hypothesis); what it checks is described in ``bridge.testing.lifecycle``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)
from torch import nn

import bridge
from bridge.kernel.errors import OptInHookError
from bridge.testing.examples import AdapterLike, adapter_of
from bridge.testing.plain_models import bare_output, bridge_output, is_plain, return_type_of, tiny_hf_model, tiny_tokens
from bridge.testing.saes import TinySAE


class HookLifecycle(RuleBasedStateMachine):
    """The state machine; ``make_lifecycle_machine`` binds it to one HF model."""

    hf_model: nn.Module
    adapter: AdapterLike
    expected: torch.Tensor
    tokens: Any
    #: hook points SAEs are spliced into (residual-stream ones), with their width
    sae_sites: dict[str, int]

    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        self.model = bridge.wrap(self.hf_model, adapter=adapter_of(self.adapter))
        self.points = self.model.hook_dict
        self.names = sorted(self.points)
        self.opt_ins = sorted({n.rsplit(".", 1)[-1] for n, p in self.points.items() if p.opt_in})
        self.live: dict[int, tuple[str, str, bool]] = {}  # handle id → (name, dir, permanent)
        self.by_id: dict[int, Any] = {}
        self.calls: dict[int, int] = {}
        self.saes: dict[str, tuple[Any, dict[str, Any]]] = {}  # site → (its SAE, its hook points by name)

    # ----------------------------------------------------------------------- expectations

    def _expected_counts(self) -> dict[tuple[int, str], int]:
        """Hooks expected per (hook point object, direction): SAE hook points of one name may be several objects
        (a permanent SAE's, parked while a temporary SAE sits on its hook point)."""
        counts: dict[tuple[int, str], int] = {}
        for handle_id, (_, direction, _) in self.live.items():
            key = (id(self.by_id[handle_id].hook_point), direction)
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _counting(self) -> tuple[Callable, dict[str, int]]:
        """A fresh hook function that counts its calls under the id of the handle it gets."""
        box: dict[str, int] = {}

        def observe(tensor: torch.Tensor, hook: Any) -> None:
            self.calls[box["id"]] = self.calls.get(box["id"], 0) + 1

        return observe, box

    def _add(self, name: str, direction: str, permanent: bool, fn: Callable | None = None) -> Any:
        box: dict[str, int] = {}
        if fn is None:
            fn, box = self._counting()
        point = self.points[name]
        if not point.enabled:
            try:
                self.model.add_hook(name, fn, dir=direction, is_permanent=permanent)
            except OptInHookError:
                return None
            raise AssertionError(f"a hook was added to the disabled opt-in hook point {name}")
        (handle,) = self.model.add_hook(name, fn, dir=direction, is_permanent=permanent)
        box["id"] = handle.id
        self.live[handle.id] = (name, direction, permanent)
        self.by_id[handle.id] = handle
        return handle

    def _forget_removed(self) -> None:
        """Drop the handles no longer on their hook point (which may be out of ``hook_dict``: a parked SAE's)."""
        for handle_id in list(self.live):
            handle = self.by_id[handle_id]
            if handle not in [*handle.hook_point.fwd_hooks, *handle.hook_point.bwd_hooks]:
                del self.live[handle_id]

    def _run(self, **kwargs: Any) -> torch.Tensor:
        """One forward pass (and a backward one while backward hooks are live). Hooks on one hook point
        that were there for the whole pass fire equally often."""
        before = {name: [h.id for h in [*p.fwd_hooks, *p.bwd_hooks]] for name, p in self.points.items()}
        self.calls = {}
        backward = any(p.bwd_hooks for p in self.points.values()) and "stop_at_layer" not in kwargs
        if backward:
            with torch.enable_grad():
                out = bridge_output(self.model, self.tokens, **kwargs)
                out.float().pow(2).mean().backward()
            self.hf_model.zero_grad(set_to_none=True)
            out = out.detach()
        else:
            with torch.no_grad():
                out = bridge_output(self.model, self.tokens, **kwargs)
        for name, point in self.points.items():
            for direction, hooks in (("fwd", point.fwd_hooks), ("bwd", point.bwd_hooks)):
                stayed = {h.id for h in hooks} & set(before[name])
                counts = {self.calls.get(i, 0) for i in stayed if self.live.get(i, ("", "", False))[1] == direction}
                assert len(counts) <= 1, f"hooks on {name} ({direction}) fired unequally: {counts}"
        return out

    # ---------------------------------------------------------------------------- rules

    @rule(target=handles, data=st.data(), direction=st.sampled_from(["fwd", "bwd"]), permanent=st.booleans())
    def add_hook(self, data, direction, permanent):
        name = data.draw(st.sampled_from(self.names), label="name")
        handle = self._add(name, direction, permanent)
        return handle if handle is not None else multiple()  # a refused hook yields no handle

    @rule(handle=consumes(handles))
    def remove_hook(self, handle):
        handle.remove()
        self.live.pop(handle.id, None)

    @rule(including_permanent=st.booleans())
    def reset_hooks(self, including_permanent):
        self.model.reset_hooks(including_permanent=including_permanent)
        self.live = {i: v for i, v in self.live.items() if v[2] and not including_permanent}

    @rule(data=st.data(), depth=st.integers(1, 3))
    def nested_hooks_blocks(self, data, depth):
        """``hooks()`` blocks inside one another, a forward pass in the innermost; each exit restores."""
        before = dict(self.live)

        def enter(level: int) -> None:
            if level == depth:
                self._run()
                return
            name = data.draw(st.sampled_from([n for n in self.names if self.points[n].enabled]), label="name")
            direction = data.draw(st.sampled_from(["fwd", "bwd"]), label="dir")
            outer = dict(self.live)
            fn, box = self._counting()
            with self.model.hooks(**{f"{direction}_hooks": [(name, fn)]}):
                added = [h for p in self.points.values() for h in [*p.fwd_hooks, *p.bwd_hooks] if h.id not in outer]
                for handle in added:
                    box["id"] = handle.id
                    self.by_id[handle.id] = handle
                    self.live[handle.id] = (name, direction, False)
                self.check_counts()
                enter(level + 1)
            self.live = outer
            self.check_counts()

        enter(0)
        assert self.live == before

    @rule(data=st.data())
    def hook_that_raises(self, data):
        name = data.draw(st.sampled_from([n for n in self.names if self.points[n].enabled]), label="name")

        def boom(tensor, hook):
            raise _Boom(hook.name)

        try:
            return_type = return_type_of(self.model.adapter, self.model.unembed)
            self.model.run_with_hooks(self.tokens, fwd_hooks=[(name, boom)], return_type=return_type)
        except _Boom:
            pass
        except Exception as exc:  # the hook point is not reached with these inputs (e.g. decode-only)
            raise AssertionError(f"{name}: a raising hook surfaced as {exc!r}") from exc
        self._forget_removed()

    @rule(data=st.data(), remove=st.booleans(), prepend=st.booleans(), same_point=st.booleans())
    def hook_that_changes_hooks(self, data, remove, prepend, same_point):
        """A forward hook that adds a permanent hook (or removes a live one, possibly on its own hook
        point) while the pass runs."""
        enabled = [n for n in self.names if self.points[n].enabled]
        victim = data.draw(st.sampled_from(sorted(self.live)), label="victim") if remove and self.live else None
        if victim is not None and same_point:
            name = self.live[victim][0]
        else:
            name = data.draw(st.sampled_from(enabled), label="name")
        other = name if same_point else data.draw(st.sampled_from(enabled), label="other")
        count, box = self._counting()

        def meddle(tensor, hook):
            count(tensor, hook)
            if victim is not None and victim in self.live:
                self.by_id[victim].remove()
                del self.live[victim]
            elif victim is None and not getattr(meddle, "done", False):
                meddle.done = True
                self._add(other, "fwd", True)

        (handle,) = self.model.add_hook(name, meddle, prepend=prepend)
        box["id"] = handle.id
        self.live[handle.id] = (name, "fwd", False)
        tail = self._add(name, "fwd", False)  # a hook after the meddling one: it must still fire
        try:
            self._run()
        finally:
            for temporary in (handle, tail):
                temporary.remove()
                self.live.pop(temporary.id, None)

    @precondition(lambda self: bool(self.opt_ins))
    @rule(data=st.data(), enabled=st.booleans())
    def toggle_opt_in(self, data, enabled):
        suffix = data.draw(st.sampled_from(self.opt_ins), label="opt_in")
        self.model.set_opt_in(suffix, enabled)
        if not enabled:
            self._forget_removed()

    @rule(layer=st.integers(0, 1))
    def stop_at_layer(self, layer):
        if not len(self.model.blocks):  # a composite model: its blocks are in its towers
            return
        out = self._run(stop_at_layer=layer)
        if isinstance(self.tokens, torch.Tensor):
            assert out.shape[:2] == self.tokens.shape
        else:
            assert out.shape[-1] == self.model.cfg.d_model

    @rule()
    def run(self):
        out = self._run()
        if not any(p.active for p in self.points.values()):
            assert torch.equal(out, self.expected), "with no hooks the output differs from the bare HF model's"

    # ----------------------------------------------------------------------------- SAEs

    def _sae_points(self, site: str) -> dict[str, Any]:
        return {n: p for n, p in self.points.items() if n.startswith(f"{site}.hook_sae_")}

    @precondition(lambda self: bool(self.sae_sites))
    @rule(data=st.data(), seed=st.integers(0, 3), error_term=st.booleans())
    def add_sae(self, data, seed, error_term):
        site = data.draw(st.sampled_from(sorted(self.sae_sites)), label="site")
        sae = TinySAE(self.sae_sites[site], d_sae=8, seed=seed)
        self.model.add_sae(sae, hook_name=site, use_error_term=error_term)
        self._forget_removed()  # the hooks on a replaced SAE's hook points went with it
        self.saes[site] = (sae, self._sae_points(site))

    @precondition(lambda self: bool(self.saes))
    @rule(data=st.data(), everything=st.booleans())
    def reset_saes(self, data, everything):
        if everything:
            self.model.reset_saes()
            self.saes = {}
        else:
            site = data.draw(st.sampled_from(sorted(self.saes)), label="site")
            self.model.reset_saes(site)
            del self.saes[site]
        self._forget_removed()

    @precondition(lambda self: bool(self.saes))
    @rule(data=st.data(), direction=st.sampled_from(["fwd", "bwd"]), permanent=st.booleans())
    def hook_on_latents(self, data, direction, permanent):
        site = data.draw(st.sampled_from(sorted(self.saes)), label="site")
        name = data.draw(st.sampled_from(sorted(self.saes[site][1])), label="sae hook")
        count, box = self._counting()

        def patch(tensor: torch.Tensor, hook: Any) -> torch.Tensor | None:
            count(tensor, hook)
            return _zero_first_latent(tensor, hook) if name.endswith("acts_post") else None

        handle = self._add(name, direction, permanent, fn=patch)
        box["id"] = handle.id

    @precondition(lambda self: bool(self.sae_sites))
    @rule(data=st.data(), depth=st.integers(1, 3), latent_hooks=st.booleans())
    def temporary_saes(self, data, depth, latent_hooks):
        """``saes()`` blocks inside one another (each possibly on a hook point that has a permanent SAE, with hooks
        on its latents), a forward pass and hooks on the temporary latents in the innermost; each exit puts back
        exactly what was there: the same SAE, the same hook point objects, the same hooks."""
        sites = sorted(self.sae_sites)

        def enter(level: int) -> None:
            if level == depth:
                if latent_hooks:
                    site = data.draw(st.sampled_from(sorted(self.saes)), label="latent site")
                    self._add(f"{site}.hook_sae_acts_post", "fwd", data.draw(st.booleans(), label="permanent"))
                self._run()
                return
            site = data.draw(st.sampled_from(sites), label="site")
            before = dict(self.saes)
            sae = TinySAE(self.sae_sites[site], d_sae=8, seed=10 + level)
            with self.model.saes([(site, sae)], use_error_term=data.draw(st.booleans(), label="error term")):
                self.saes[site] = (sae, self._sae_points(site))
                self.saes_are_where_the_model_says()
                enter(level + 1)
            self.saes = before
            self._forget_removed()  # hooks on the temporary SAE's latents went with it
            self.saes_are_where_the_model_says()
            self.check_counts()

        enter(0)

    @precondition(lambda self: bool(self.sae_sites))
    @rule(data=st.data())
    def run_with_saes(self, data):
        site = data.draw(st.sampled_from(sorted(self.sae_sites)), label="site")
        with torch.no_grad():
            self.model.run_with_saes(
                self.tokens,
                saes=[(site, TinySAE(self.sae_sites[site], d_sae=8))],
                return_type=return_type_of(self.model.adapter, self.model.unembed),
            )
        self._forget_removed()

    # ------------------------------------------------------------------------ invariants

    @invariant()
    def check_counts(self):
        expected = self._expected_counts()
        for name, point in self.points.items():
            for direction, hooks in (("fwd", point.fwd_hooks), ("bwd", point.bwd_hooks)):
                assert len(hooks) == expected.get((id(point), direction), 0), (name, direction, len(hooks))

    @invariant()
    def attachments_follow_hooks(self):
        for component in self.model.components():
            for attachment in component._attachments:
                assert attachment.attached == attachment.wanted(), (type(component).__name__, attachment)
        if not any(point.active for point in self.points.values()):
            assert is_plain_but_routed(self.hf_model), "no hook is active, yet something is attached"

    @invariant()
    def saes_are_where_the_model_says(self):
        assert self.model.acts_to_saes == {site: sae for site, (sae, _) in self.saes.items()}
        for _, points in self.saes.values():
            for name, point in points.items():  # the same hook point objects, in hook_dict
                assert self.points.get(name) is point, name
        spliced = {n for n in self.points if ".hook_sae_" in n}
        assert spliced == {n for _, points in self.saes.values() for n in points}

    def teardown(self):
        self.model.detach()
        assert is_plain(self.hf_model)
        assert torch.equal(bare_output(self.hf_model, self.tokens, self.adapter), self.expected)


class _Boom(Exception):
    pass


def _zero_first_latent(acts: torch.Tensor, hook: Any) -> torch.Tensor:
    """A permanent-hook-style patch on an SAE's latents ``[..., d_sae]``."""
    acts = acts.clone()
    acts[..., 0] = 0
    return acts


def is_plain_but_routed(hf_model: nn.Module) -> bool:
    """``is_plain`` except that attention may be routed through the seam (as while wrapped)."""
    probe = torch.zeros(1)
    for module in hf_model.modules():
        if "forward" in module.__dict__:
            return False
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        if any(hook(module, (probe,), probe) is not None for hook in hooks):
            return False
    return True


def _sae_sites(hf_model: nn.Module, adapter: AdapterLike, tokens: Any, n: int = 2) -> dict[str, int]:
    """Up to ``n`` residual-stream hook points (the first and last block's ``hook_resid_post``) and their width,
    read off one forward pass of a bridge on ``hf_model`` (a copy, wrapped and detached again)."""
    model = bridge.wrap(hf_model, adapter=adapter_of(adapter))
    try:
        names = [name for name in model.hook_dict if name.endswith("hook_resid_post")]
        chosen = sorted({names[0], names[-1]})[:n] if names else []
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=chosen, return_type=None)
        return {name: int(cache[name].shape[-1]) for name in chosen if cache[name].is_floating_point()}
    finally:
        model.detach()


def make_lifecycle_machine(adapter: AdapterLike, architecture: str | None = None) -> type[HookLifecycle]:
    """``HookLifecycle`` bound to a tiny model of ``adapter`` (wrapped afresh for every example)."""
    hf = tiny_hf_model(adapter, architecture)
    reference = copy.deepcopy(hf)
    tokens = tiny_tokens(seed=1, adapter=adapter, hf_config=hf.config)
    attributes = {
        "hf_model": hf,
        "adapter": adapter,
        "tokens": tokens,
        "expected": bare_output(reference, tokens, adapter),
        "sae_sites": _sae_sites(reference, adapter, tokens),
    }
    return type(f"HookLifecycle_{architecture or adapter_of(adapter).__name__}", (HookLifecycle,), attributes)
