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


class HookLifecycle(RuleBasedStateMachine):
    """The state machine; ``make_lifecycle_machine`` binds it to one HF model."""

    hf_model: nn.Module
    adapter: AdapterLike
    expected: torch.Tensor
    tokens: Any

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

    # ----------------------------------------------------------------------- expectations

    def _expected_counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for name, direction, _ in self.live.values():
            counts[name, direction] = counts.get((name, direction), 0) + 1
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
        present = {h.id for p in self.points.values() for h in [*p.fwd_hooks, *p.bwd_hooks]}
        for handle_id in [i for i in self.live if i not in present]:
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
                added = {h.id for p in self.points.values() for h in [*p.fwd_hooks, *p.bwd_hooks]} - set(outer)
                for handle_id in added:
                    box["id"] = handle_id
                    self.live[handle_id] = (name, direction, False)
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

    # ------------------------------------------------------------------------ invariants

    @invariant()
    def check_counts(self):
        expected = self._expected_counts()
        for name, point in self.points.items():
            for direction, hooks in (("fwd", point.fwd_hooks), ("bwd", point.bwd_hooks)):
                assert len(hooks) == expected.get((name, direction), 0), (name, direction, len(hooks))

    @invariant()
    def attachments_follow_hooks(self):
        for component in self.model.components():
            for attachment in component._attachments:
                assert attachment.attached == attachment.wanted(), (type(component).__name__, attachment)
        if not self.live:
            assert is_plain_but_routed(self.hf_model), "no hook is active, yet something is attached"

    def teardown(self):
        self.model.detach()
        assert is_plain(self.hf_model)
        assert torch.equal(bare_output(self.hf_model, self.tokens, self.adapter), self.expected)


class _Boom(Exception):
    pass


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
    }
    return type(f"HookLifecycle_{architecture or adapter_of(adapter).__name__}", (HookLifecycle,), attributes)
