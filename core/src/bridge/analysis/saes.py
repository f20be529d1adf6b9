"""Sparse autoencoders spliced into hook points: ``model.add_sae(sae)``, ``run_with_saes``, ``reset_saes``.

An SAE is anything with ``encode(x) -> acts`` and ``decode(acts) -> recons`` (a SAELens ``SAE``, or a plain
``nn.Module``). Splicing it into a hook point makes the model continue with the SAE's output
instead of the activation there:

    input = x                          # the hook point's activation, after its own hooks ran
    acts = encode(input)               # [..., d_sae]
    recons = decode(acts)              # same shape as x
    output = recons                    # or, with use_error_term, recons + (x - decode(encode(x)))

The SAE's activations are hook points of the bridge, named after the hook it sits on
(``blocks.3.hook_resid_post.hook_sae_acts_post``…): cacheable, patchable, with backward hooks, in
``model.hook_dict`` while the SAE is attached and gone after ``reset_saes()``. Which ones exist:

- always: ``hook_sae_input``, ``hook_sae_acts_post`` (encode's output), ``hook_sae_recons`` (decode's
  output), ``hook_sae_error`` (fires only with ``use_error_term``), ``hook_sae_output`` (what the model
  continues with);
- ``hook_sae_acts_pre`` only for an SAE that has a submodule named so which its ``encode`` calls on the
  pre-activation (as SAELens SAEs do). An SAE with submodules named ``hook_sae_input``,
  ``hook_sae_acts_post`` or ``hook_sae_recons`` has those fire where its own code calls them
  (e.g. after SAELens's input normalisation); otherwise the bridge fires them around ``encode``/``decode``.

The splice is structural: while an SAE is attached, its hook point is a ``SplicedHookPoint`` that runs
the SAE after the point's own hooks (so a hook on ``blocks.3.hook_resid_post`` still sees the model's
activation, the SAE's input); ``reset_saes()`` makes it a plain ``HookPoint`` again. With no SAE
attached nothing runs. The SAE's own submodules are swapped for routing modules only for the duration
of its call.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bridge.kernel.errors import BridgeError
from bridge.kernel.fingerprint import tensors_digest
from bridge.kernel.hook_points import HookPoint

if TYPE_CHECKING:
    from bridge.kernel.cache import PlainActivationCache

#: The SAE's hook points, by their SAELens names, in the order they fire.
SAE_HOOKS = (
    "hook_sae_input",
    "hook_sae_acts_pre",
    "hook_sae_acts_post",
    "hook_sae_recons",
    "hook_sae_error",
    "hook_sae_output",
)
#: The ones an SAE may call from its own code (submodules of that name); the rest the splice fires.
INNER_HOOKS = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons")

SAESpec = Any  # an SAE, or (hook_name, sae)


class SAESpliceError(BridgeError):
    """An SAE cannot be spliced in (no hook name, unknown hook point, wrong output shape…)."""


def sae_hook_name(sae: Any) -> str | None:
    """The hook name an SAE was trained on: ``sae.cfg.metadata.hook_name`` (SAELens 6) or ``sae.cfg.hook_name``."""
    cfg = getattr(sae, "cfg", None)
    for holder in (getattr(cfg, "metadata", None), cfg):
        name = getattr(holder, "hook_name", None)
        if isinstance(name, str) and name:
            return name
    return None


def sae_width(sae: Any) -> int | None:
    """The width an SAE reads: ``sae.cfg.d_in`` (SAELens), else the first axis of a 2-D ``W_enc``
    (``[d_in, d_sae]``, SAELens's layout); ``None`` when it says neither."""
    d_in = getattr(getattr(sae, "cfg", None), "d_in", None)
    if isinstance(d_in, int) and not isinstance(d_in, bool):
        return d_in
    w_enc = getattr(sae, "W_enc", None)
    if isinstance(w_enc, torch.Tensor) and w_enc.ndim == 2:
        return int(w_enc.shape[0])
    return None


class _Route(nn.Module):
    """Stands in for an SAE's own hook submodule during its call: the SAE's module, then the bridge's point."""

    def __init__(self, own: nn.Module, point: HookPoint) -> None:
        super().__init__()
        self.own = own
        self.point = point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point(self.own(x))


class Splice:
    """One SAE spliced into one hook point; calling it maps the activation to what the model continues with."""

    def __init__(self, sae: Any, hook_name: str, use_error_term: bool) -> None:
        self.sae = sae
        self.hook_name = hook_name
        self.use_error_term = use_error_term
        #: the SAE's own hook submodules the bridge routes through (SAELens SAEs: all of INNER_HOOKS)
        self.inner = tuple(n for n in INNER_HOOKS if isinstance(getattr(sae, n, None), nn.Module))
        names = [n for n in SAE_HOOKS if n != "hook_sae_acts_pre" or n in self.inner]
        self.points: dict[str, HookPoint] = {n: HookPoint() for n in names}
        for short, point in self.points.items():
            point.name = f"{hook_name}.{short}"

    @property
    def named_points(self) -> dict[str, HookPoint]:
        """The SAE's hook points by full name (``{hook_name}.hook_sae_…``)."""
        return {point.name: point for point in self.points.values()}

    def remove_hooks(self) -> None:
        """Remove every hook (permanent ones too) from the SAE's hook points."""
        for point in self.points.values():
            point.remove_hooks("both", including_permanent=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[..., d_in]`` → the SAE's output of the same shape and dtype. Per-head activations
        ``[..., n_heads, d_head]`` go through an SAE of ``d_in = n_heads · d_head`` flattened (as SAELens
        trains ``hook_z`` SAEs); the SAE's hook points see them flat, the model gets them back per head."""
        model_shape = x.shape
        x = self._sae_input(x)
        points = self.points
        with self._swapped({n: _Route(getattr(self.sae, n), points[n]) for n in self.inner}):
            sae_in = x if "hook_sae_input" in self.inner else points["hook_sae_input"](x)
            acts = self.sae.encode(sae_in)  # [..., d_sae]
            if "hook_sae_acts_post" not in self.inner:
                acts = points["hook_sae_acts_post"](acts)
            recons = self.sae.decode(acts)  # [..., d_in]
            if "hook_sae_recons" not in self.inner:
                recons = points["hook_sae_recons"](recons)
        self._check_shape(recons, x)
        out = recons
        if self.use_error_term:
            # the error of the SAE left alone (no hook runs, no gradient), so patches on latents stay visible
            with torch.no_grad(), self._swapped({n: nn.Identity() for n in self.inner}):
                clean = self.sae.decode(self.sae.encode(x))
                error = x - clean.to(x.dtype)
            out = recons.to(x.dtype) + points["hook_sae_error"](error)
        return points["hook_sae_output"](out.to(x.dtype).reshape(model_shape))

    def _sae_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the SAE reads it: as is, or with its last two axes (heads) flattened when the SAE's
        ``d_in`` is their product and it does not flatten them itself (SAELens's ``reshape_activations="hook_z"``,
        which its pretrained ``hook_z`` SAEs have); an activation of another width is refused, naming the SAE
        and the hook."""
        d_in = sae_width(self.sae)
        if d_in is None or x.shape[-1] == d_in or getattr(self.sae, "hook_z_reshaping_mode", False):
            return x  # (a SAELens SAE with hook_z reshaping on flattens the heads itself, and unflattens its output)
        if x.ndim >= 2 and x.shape[-2] * x.shape[-1] == d_in:
            return x.flatten(-2)  # [..., n_heads, d_head] -> [..., n_heads · d_head]
        raise SAESpliceError(
            f"the {type(self.sae).__name__} on {self.hook_name!r} has d_in={d_in}, but the activation there has "
            f"shape {tuple(x.shape)} (width {x.shape[-1]}); splice an SAE trained on this hook point."
        )

    @contextlib.contextmanager
    def _swapped(self, modules: dict[str, nn.Module]) -> Iterator[None]:
        """Replace the SAE's submodules ``name -> module`` for the duration, then put its own back."""
        own = {name: getattr(self.sae, name) for name in modules}
        try:
            for name, module in modules.items():
                setattr(self.sae, name, module)
            yield
        finally:
            for name, module in own.items():
                setattr(self.sae, name, module)

    def _check_shape(self, recons: Any, x: torch.Tensor) -> None:
        if not isinstance(recons, torch.Tensor) or recons.shape != x.shape:
            got = tuple(recons.shape) if isinstance(recons, torch.Tensor) else type(recons).__name__
            raise SAESpliceError(
                f"the SAE on {self.hook_name!r} decoded to {got}, but the activation there has shape "
                f"{tuple(x.shape)}; splice an SAE trained on this hook point (its decode must return the "
                "activation's shape)."
            )


class SplicedHookPoint(HookPoint):
    """A hook point with an SAE spliced in: its hooks run, then the SAE; the model continues with the SAE's output.

    Always active, so the component that fires it stays attached while the SAE is there."""

    @property
    def active(self) -> bool:
        return True

    @property
    def splice(self) -> Splice:
        return self.__dict__["_bridge_splice"]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.splice(HookPoint.__call__(self, x))

    def fingerprint(self) -> list[str]:
        """The hooks here, then the SAE: its class, ``use_error_term`` and a digest of its parameters and buffers."""
        sae = self.splice.sae
        state = [*sae.named_parameters(), *sae.named_buffers()] if isinstance(sae, nn.Module) else []
        if not isinstance(sae, nn.Module):
            state = sorted((k, v) for k, v in vars(sae).items() if isinstance(v, torch.Tensor))
        kind = f"{type(sae).__module__}.{type(sae).__qualname__}"
        return [*super().fingerprint(), f"sae:{kind}:error_term={self.splice.use_error_term}:{tensors_digest(state)}"]


class SAESplicing:
    """``Bridge`` methods that splice SAEs into hook points (TransformerLens/SAELens ``HookedSAETransformer`` API)."""

    @property
    def _splices(self) -> dict[str, Splice]:
        return self.__dict__.setdefault("_sae_splices", {})

    @property
    def acts_to_saes(self) -> dict[str, Any]:
        """Hook name → the SAE spliced there."""
        return {name: splice.sae for name, splice in self._splices.items()}

    def add_sae(
        self, sae: Any, hook_name: str | Callable[[str], bool] | None = None, use_error_term: bool | None = None
    ) -> None:
        """Splice ``sae`` into ``hook_name`` (default: the hook the SAE was trained on, ``sae.cfg.metadata.hook_name``).

        ``hook_name`` may be any spelling ``add_hook`` accepts (TransformerLens 4's ``blocks.0.attn.hook_q_input``)
        or a filter on names that selects exactly one hook point; the SAE sits at the canonical name. It stays
        until ``reset_saes()`` (``reset_hooks()`` leaves it); an SAE already on that hook point is replaced.
        ``use_error_term`` (default: ``sae.use_error_term``, else False) adds the SAE's error
        ``x - decode(encode(x))`` to its output, so the model's output is unchanged unless a hook on the
        SAE's activations changes them (the error carries no gradient, as in SAELens). On any error nothing
        changes (an SAE that was there stays)."""
        replaced = self._splice(sae, hook_name, use_error_term)
        if replaced is not None:
            replaced.remove_hooks()

    def reset_saes(self, act_names: str | Sequence[str] | None = None) -> None:
        """Remove the SAEs on ``act_names`` (default: every SAE), with their hook points and the hooks on them."""
        self._check_usable(detached_ok=True)
        given = [act_names] if isinstance(act_names, str) else list(self._splices if act_names is None else act_names)
        names = [self._canonical(n) if isinstance(n, str) else n for n in given]
        unknown = [g for g, n in zip(given, names, strict=True) if n not in self._splices]
        if unknown:
            raise SAESpliceError(f"no SAE is spliced into {unknown}; SAEs are on {sorted(self._splices)}.")
        for name in names:
            self._unsplice(name).remove_hooks()

    @contextlib.contextmanager
    def saes(
        self,
        saes: SAESpec | Iterable[SAESpec] = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
    ) -> Iterator[Any]:
        """Splice SAEs for the duration of a ``with`` block; at exit (with ``reset_saes_end``) they are removed
        and the SAEs they replaced are put back exactly as they were (the same hook points, with the hooks
        on them). Each item is an SAE or ``(hook_name, sae)``."""
        restore: list[tuple[str, Splice | None]] = []
        try:
            for hook_name, sae in self._sae_items(saes):
                name = self._sae_point_name(sae, hook_name)
                restore.append((name, self._splice(sae, name, use_error_term)))
            yield self
        finally:
            for name, previous in reversed(restore):
                if not reset_saes_end:
                    if previous is not None:
                        previous.remove_hooks()
                    continue
                if name in self._splices:
                    self._unsplice(name).remove_hooks()
                if previous is not None:
                    self._install(previous)

    def run_with_saes(
        self,
        *model_args: Any,
        saes: SAESpec | Iterable[SAESpec] = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        **model_kwargs: Any,
    ) -> Any:
        """A forward pass with ``saes`` spliced in (removed again after, with ``reset_saes_end``)."""
        with self.saes(saes, reset_saes_end=reset_saes_end, use_error_term=use_error_term):
            return self(*model_args, **model_kwargs)

    def run_with_cache_with_saes(
        self,
        *model_args: Any,
        saes: SAESpec | Iterable[SAESpec] = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        return_cache_object: bool = True,
        **kwargs: Any,
    ) -> tuple[Any, PlainActivationCache | dict[str, torch.Tensor]]:
        """``run_with_cache`` with ``saes`` spliced in; the SAEs' hook points are cached like any other
        (``names_filter`` and the rest go to ``run_with_cache``)."""
        with self.saes(saes, reset_saes_end=reset_saes_end, use_error_term=use_error_term):
            out, cache = self.run_with_cache(*model_args, **kwargs)
        return out, cache if return_cache_object else dict(cache.cache_dict)

    def run_with_hooks_with_saes(
        self,
        *model_args: Any,
        saes: SAESpec | Iterable[SAESpec] = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """``run_with_hooks`` with ``saes`` spliced in; hooks may sit on the SAEs' hook points."""
        with self.saes(saes, reset_saes_end=reset_saes_end, use_error_term=use_error_term):
            return self.run_with_hooks(*model_args, **kwargs)

    # ------------------------------------------------------------- internals

    @staticmethod
    def _sae_items(saes: SAESpec | Iterable[SAESpec]) -> list[tuple[str | None, Any]]:
        if callable(getattr(saes, "encode", None)) or (
            isinstance(saes, tuple) and len(saes) == 2 and isinstance(saes[0], str | Callable)
        ):
            saes = [saes]
        items: list[tuple[str | None, Any]] = []
        for item in saes:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str | Callable):
                items.append((item[0], item[1]))
            else:
                items.append((None, item))
        return items

    def _splice(
        self, sae: Any, hook_name: str | Callable[[str], bool] | None, use_error_term: bool | None
    ) -> Splice | None:
        """Splice ``sae`` in after every check; returns the splice it replaced (taken out, hooks kept on its
        points) or ``None``. Transactional: on any error the hook point is as it was."""
        self._check_usable()
        for method in ("encode", "decode"):
            if not callable(getattr(sae, method, None)):
                raise SAESpliceError(
                    f"a {type(sae).__name__} has no `{method}` method; an SAE needs encode(x) -> acts and "
                    "decode(acts) -> reconstruction."
                )
        name = self._sae_point_name(sae, hook_name)
        out_name = getattr(getattr(getattr(sae, "cfg", None), "metadata", None), "hook_name_out", None)
        if out_name is not None and self._canonical(out_name) != name:
            raise SAESpliceError(
                f"this SAE reads {name!r} and writes {out_name!r} (a transcoder); only SAEs that read and write "
                "one hook point can be spliced."
            )
        self._check_width(sae, name)
        if use_error_term is None:
            use_error_term = bool(getattr(sae, "use_error_term", False))
        splice = Splice(sae, name, use_error_term)
        previous = self._unsplice(name) if name in self._splices else None
        try:
            self._install(splice)
        except BaseException:
            if previous is not None:
                self._install(previous)
            raise
        return previous

    def _sae_point_name(self, sae: Any, hook_name: str | Callable[[str], bool] | None) -> str:
        """The canonical name of the model's hook point an SAE goes to (an alias or a one-point filter resolved)."""
        spliced = {n for s in self._splices.values() for n in s.named_points}
        if hook_name is None:
            hook_name = sae_hook_name(sae)
        if hook_name is None:
            raise SAESpliceError(
                f"no hook name for this {type(sae).__name__}: it has no `cfg.metadata.hook_name` or "
                "`cfg.hook_name`; pass one, e.g. `model.add_sae(sae, hook_name='blocks.0.hook_resid_post')`."
            )
        if callable(hook_name):
            selected = [n for n, p in self._hook_dict.items() if n not in spliced and p.enabled and hook_name(n)]
            if len(selected) != 1:
                listed = f" ({', '.join(selected[:5])}{'…' if len(selected) > 5 else ''})" if selected else ""
                raise SAESpliceError(
                    f"the hook filter for this {type(sae).__name__} selects "
                    f"{len(selected) if selected else 'no'} hook point{'s' if len(selected) != 1 else ''}{listed}; "
                    "an SAE is spliced into one hook point: pass its name, or add one SAE per hook point."
                )
            return selected[0]
        if not isinstance(hook_name, str):
            raise SAESpliceError(
                f"hook_name must be a hook point's name or a filter on names, got {type(hook_name).__name__}."
            )
        name = self._canonical(hook_name)
        if name in spliced:
            raise SAESpliceError(
                f"{name!r} is a hook point of a spliced SAE; splice SAEs into the model's own hook points."
            )
        return self._select(name)[0].name

    def _check_width(self, sae: Any, name: str) -> None:
        """Refuse an SAE whose ``d_in`` is not the width the hook point ``name`` is known to have."""
        d_in = sae_width(sae)
        widths = self._known_widths(name)
        if d_in is None or not widths or d_in in widths:
            return
        raise SAESpliceError(
            f"this {type(sae).__name__} has d_in={d_in}, but {name!r} has width "
            f"{' or '.join(str(w) for w in sorted(widths))}; splice an SAE trained on this hook point "
            "(or pass the hook_name it was trained on)."
        )

    def _known_widths(self, name: str) -> set[int]:
        """The widths (last axis, or heads × last axis) the hook point ``name`` has for sure, from the config
        and the weights; empty when not known before a forward pass (a family's own hook, a tower's)."""
        cfg = self.cfg
        if _RESIDUAL_WIDTH.fullmatch(name):
            return {cfg.d_model}
        match = _BLOCK_HOOK.fullmatch(name)
        if match is None or not len(self.blocks):
            return set()
        block = self.blocks[int(match["layer"])]
        hook = match["hook"]
        if hook in ("mlp.hook_pre", "mlp.hook_post", "mlp.hook_pre_linear"):
            try:
                w_in = block.mlp.W_in  # [d_model, d_mlp]
            except Exception:  # a kind of MLP without that view, or offloaded weights
                return set()
            return {int(w_in.shape[-1])} if isinstance(w_in, torch.Tensor) and w_in.device.type != "meta" else set()
        if hook == "attn.hook_z" and hasattr(block, "attn"):
            d_head = cfg.d_head_v or cfg.d_head
            return {d_head, cfg.n_heads * d_head}
        return set()

    def _install(self, splice: Splice) -> None:
        """Put ``splice`` (a new one, or one taken out before, with the hooks on its points) into its hook point."""
        name = splice.hook_name
        point = self._hook_dict[name]
        point.__dict__["_bridge_splice"] = splice
        point.__class__ = SplicedHookPoint
        try:
            self._insert_points(name, splice.named_points)
            self._splices[name] = splice
            point._notify()  # now active: the component that fires it attaches
        except BaseException:
            self._splices.pop(name, None)
            for full_name in splice.named_points:
                self._hook_dict.pop(full_name, None)
            point.__class__ = HookPoint
            point.__dict__.pop("_bridge_splice", None)
            point._notify()
            raise

    def _insert_points(self, after: str, points: dict[str, HookPoint]) -> None:
        """Put the SAE's hook points into ``hook_dict`` right after the hook point it sits on (in place)."""
        entries = list(self._hook_dict.items())
        at = next(i for i, (name, _) in enumerate(entries) if name == after) + 1
        entries[at:at] = points.items()
        self._hook_dict.clear()
        self._hook_dict.update(entries)

    def _unsplice(self, name: str) -> Splice:
        """Take the SAE on ``name`` out (its hook points leave ``hook_dict``, keeping their hooks); returns it."""
        splice = self._splices.pop(name)
        for full_name in splice.named_points:
            self._hook_dict.pop(full_name, None)
        point = self._hook_dict[name]
        point.__class__ = HookPoint
        point.__dict__.pop("_bridge_splice", None)
        point._notify()  # back to its own hooks: the component detaches if there are none
        return splice


#: Hook points whose activation is as wide as the residual stream.
_RESIDUAL_WIDTH = re.compile(
    r"hook_embed|hook_pos_embed|ln_final\.hook_normalized|blocks\.\d+\.(hook_resid_(pre|mid|post)|hook_attn_out"
    r"|hook_mlp_out|hook_mlp_in|ln[12]\.hook_normalized)"
)
_BLOCK_HOOK = re.compile(r"blocks\.(?P<layer>\d+)\.(?P<hook>mlp\.hook_\w+|attn\.hook_\w+)")


__all__ = [
    "SAE_HOOKS",
    "SAESpliceError",
    "SAESplicing",
    "Splice",
    "SplicedHookPoint",
    "sae_hook_name",
    "sae_width",
]
