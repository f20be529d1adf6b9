"""``Bridge``: an HF model with TransformerLens-style hook points."""

from __future__ import annotations

import contextlib
import copy
import inspect
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import nn

from bridge import ownership, seam
from bridge.adapter import Adapter
from bridge.cache import ActivationCache
from bridge.components.base import Component, ForwardOverride
from bridge.components.embedding import Embedding
from bridge.config import BridgeConfig
from bridge.errors import BridgeError, NoLMHeadError, OptInHookError, unknown_hook_error
from bridge.generation import Generation
from bridge.hook_points import HookFn, HookHandle, HookPoint
from bridge.processing import WeightProcessing
from bridge.tokens import TokenizerHelper
from bridge.weights import WeightViews

NamesFilter = str | Sequence[str] | Callable[[str], bool] | None
HookSpec = tuple[str | Callable[[str], bool], HookFn]
ReturnType = Literal["logits", "loss", "both", "hidden"] | None


class _StopForward(Exception):
    def __init__(self, residual: torch.Tensor) -> None:
        self.residual = residual


class ConcurrentUseError(BridgeError):
    """A bridge was used from a second thread while a forward pass ran in another."""


class _Teardown:
    """Gives an HF model back: removes every hook, takes every attachment off, restores attention.

    Holds the parts, never the bridge, so it can run when the bridge is garbage collected."""

    def __init__(self, hf_model: nn.Module) -> None:
        self.hf_model = hf_model
        self.components: list[Component] = []
        self.hook_points: list[HookPoint] = []
        self.routed = False

    def __call__(self) -> None:
        for point in self.hook_points:
            point.remove_hooks("both", including_permanent=True)
        for component in self.components:
            component.detach_all()
        if self.routed:
            seam.disable(self.hf_model)


class Bridge(WeightViews, WeightProcessing, Generation, nn.Module):
    """An HF model with named hook points; call it like a TransformerLens ``HookedTransformer``.

    Build one with ``bridge.load`` or ``bridge.wrap``. The HF model stays intact
    (``bridge.hf_model``): components only reach into it while their hooks are in use.
    A model has one bridge at a time; hooks are shared by every thread, so use a bridge from one
    thread at a time (a second thread raises ``ConcurrentUseError``; give it a ``copy.deepcopy``).
    """

    def __init__(self, hf_model: nn.Module, adapter: Adapter, cfg: BridgeConfig, tokenizer: Any = None) -> None:
        super().__init__()
        self._detached = False
        self._lock = threading.Lock()
        self._running_in: int | None = None
        self._depth = 0
        teardown = _Teardown(hf_model)
        self._release = ownership.claim(hf_model, self, teardown)
        self.hf_model = hf_model
        self.adapter = adapter
        self.cfg = cfg
        self.tokenizer = tokenizer
        self._tokens = TokenizerHelper(tokenizer, cfg)
        try:
            self._build(adapter.component_map(cfg))
            teardown.components = self.components()
            self._check_overrides(teardown.components)
            for component in teardown.components:
                component.bind()
            self._uses_seam = any(component.uses_seam for component in teardown.components)
            if self._uses_seam:
                teardown.routed = True
                seam.enable(hf_model)
        except BaseException:
            self.detach()
            raise
        self._hook_dict = {
            name: module
            for child_name, child in self.named_children()
            if child_name != "hf_model"
            for name, module in child.named_modules(prefix=child_name)
            if isinstance(module, HookPoint)
        }
        teardown.hook_points = list(self._hook_dict.values())
        for name, hook in self._hook_dict.items():
            hook.name = name
        forward_params = inspect.signature(hf_model.forward).parameters
        self._takes_position_ids = "position_ids" in forward_params

    def _check_overrides(self, components: list[Component]) -> None:
        """Refuse a component map in which one HF module's forward is replaced twice (by two components,
        or twice by one): the overrides would undo each other when hooks come and go."""
        claimed: dict[int, Component] = {}
        for component in components:
            for attachment in component._attachments:
                if not isinstance(attachment, ForwardOverride):
                    continue
                first = claimed.setdefault(id(attachment.module), component)
                overrides = [a for a in component._attachments if isinstance(a, ForwardOverride)]
                if first is component and sum(a.module is attachment.module for a in overrides) == 1:
                    continue
                paths = {id(m): n for n, m in self.hf_model.named_modules()}
                names = {id(m): n for n, m in self.named_modules() if isinstance(m, Component)}
                raise BridgeError(
                    f"{type(self.adapter).__name__}: components {names.get(id(first))!r} and "
                    f"{names.get(id(component))!r} both replace the forward of HF module "
                    f"{paths.get(id(attachment.module), '?')!r}; give each HF module to one component "
                    "in the component map."
                )

    def _build(self, cmap: Any) -> None:
        base = self.hf_model.base_model
        if cmap.embed is not None:
            self.hook_embed = HookPoint()
            self.embed = Embedding(base.get_submodule(cmap.embed), self.cfg, hook=self.hook_embed, scope=base)
        if cmap.pos_embed is not None:
            self.hook_pos_embed = HookPoint()
            self.pos_embed = Embedding(base.get_submodule(cmap.pos_embed), self.cfg, hook=self.hook_pos_embed)
        self.blocks = nn.ModuleList()
        self._hf_blocks = list(base.get_submodule(cmap.blocks))
        for hf_block in self._hf_blocks:
            self.blocks.append(cmap.block.build(hf_block, self.cfg))
        self.ln_final = cmap.ln_final.build(base, self.cfg) if cmap.ln_final is not None else None
        self._hf_ln_final = self.ln_final.hf if self.ln_final is not None else None
        self.unembed = (
            self.hf_model.get_submodule(cmap.unembed)
            if cmap.unembed is not None
            else self.hf_model.get_output_embeddings()
        )

    # ----------------------------------------------------------------- hooks

    def components(self) -> list[Component]:
        """Every component of the bridge (not the HF modules they wrap)."""
        return [
            module
            for name, child in self.named_children()
            if name != "hf_model"
            for module in child.modules()
            if isinstance(module, Component)
        ]

    @property
    def hook_dict(self) -> dict[str, HookPoint]:
        """Every hook point by canonical name."""
        return self._hook_dict

    def hook_points(self) -> list[HookPoint]:
        return list(self._hook_dict.values())

    def _select(self, names: str | Callable[[str], bool], *, explicit_opt_in_error: bool) -> list[HookPoint]:
        if callable(names):
            return [h for n, h in self._hook_dict.items() if names(n) and h.enabled]
        if names not in self._hook_dict:
            raise unknown_hook_error(names, self._hook_dict)
        hook = self._hook_dict[names]
        if not hook.enabled and explicit_opt_in_error:
            raise OptInHookError(
                f"{names!r} is an opt-in hook point and is disabled; enable it first with "
                f"`model.set_opt_in({names.rsplit('.', 1)[-1]!r}, True)`"
                + (" (or `model.set_use_attn_result(True)`)" if names.endswith("hook_result") else "")
                + "."
            )
        return [hook]

    def add_hook(
        self,
        name: str | Callable[[str], bool],
        hook: HookFn,
        dir: Literal["fwd", "bwd"] = "fwd",
        is_permanent: bool = False,
        prepend: bool = False,
    ) -> list[HookHandle]:
        """Add ``hook`` to the hook point ``name``, or to every hook point whose name passes a filter."""
        self._check_usable()
        return [
            point.add_hook(hook, dir=dir, is_permanent=is_permanent, prepend=prepend)
            for point in self._select(name, explicit_opt_in_error=True)
        ]

    def reset_hooks(self, including_permanent: bool = False) -> None:
        """Remove every hook added to this bridge (permanent ones only if asked)."""
        self._check_usable(detached_ok=True)
        for point in self._hook_dict.values():
            point.remove_hooks("both", including_permanent=including_permanent)

    @contextlib.contextmanager
    def hooks(
        self,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
    ) -> Iterator[Bridge]:
        """Attach hooks for the duration of a ``with`` block; exactly those are removed at exit."""
        handles: list[HookHandle] = []
        try:
            for direction, specs in (("fwd", fwd_hooks), ("bwd", bwd_hooks)):
                for name, fn in specs:
                    handles.extend(self.add_hook(name, fn, dir=direction))
            yield self
        finally:
            if reset_hooks_end:
                for handle in handles:
                    handle.remove()

    def run_with_hooks(
        self,
        *args: Any,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run a forward pass with temporary hooks. Arguments after the hooks go to ``forward``."""
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end=reset_hooks_end):
            return self(*args, **kwargs)

    def _names(self, names_filter: NamesFilter) -> list[str]:
        if names_filter is None:
            return [n for n, h in self._hook_dict.items() if h.enabled]
        if isinstance(names_filter, str):
            names_filter = [names_filter]
        if callable(names_filter):
            return [n for n, h in self._hook_dict.items() if h.enabled and names_filter(n)]
        for name in names_filter:
            self._select(name, explicit_opt_in_error=True)
        return list(names_filter)

    def run_with_cache(
        self,
        *args: Any,
        names_filter: NamesFilter = None,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        incl_bwd: bool = False,
        reset_hooks_end: bool = True,
        **kwargs: Any,
    ) -> tuple[Any, ActivationCache]:
        """Run a forward pass and cache the activations the filter selects.

        ``names_filter``: a hook name, a list of names, or a predicate on names (default:
        every enabled hook point). ``incl_bwd`` also backpropagates the (scalar) output and
        caches gradients under ``name + "_grad"``.
        """
        store: dict[str, torch.Tensor] = {}

        def save(tensor: torch.Tensor, hook: HookPoint) -> None:
            store[hook.name] = tensor.detach() if device is None else tensor.detach().to(device)

        def save_grad(grad: torch.Tensor, hook: HookPoint) -> None:
            store[f"{hook.name}_grad"] = grad.detach() if device is None else grad.detach().to(device)

        names = self._names(names_filter)
        fwd = [(n, save) for n in names]
        bwd = [(n, save_grad) for n in names] if incl_bwd else []
        with self.hooks(fwd, bwd, reset_hooks_end=reset_hooks_end):
            out = self(*args, **kwargs)
            if incl_bwd:
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise BridgeError("incl_bwd=True needs a scalar output: pass return_type='loss'")
                out.backward()
        cache = ActivationCache(store, n_layers=self.cfg.n_layers, model=self)
        return out, cache.remove_batch_dim() if remove_batch_dim else cache

    def set_opt_in(self, suffix: str, enabled: bool = True) -> None:
        """Enable or disable every opt-in hook point whose name ends with ``suffix``."""
        self._check_usable()
        points = [h for n, h in self._hook_dict.items() if h.opt_in and n.endswith(suffix)]
        if not points:
            opt_ins = sorted({n.rsplit(".", 1)[-1] for n, h in self._hook_dict.items() if h.opt_in})
            raise BridgeError(f"no opt-in hook point ends with {suffix!r}; opt-in hooks here: {opt_ins}")
        for point in points:
            point.enabled = enabled
            if not enabled:
                point.remove_hooks("both", including_permanent=True)
        for component in self.components():
            component.sync()

    def set_use_attn_result(self, enabled: bool) -> None:
        """TransformerLens's switch for the per-head ``attn.hook_result``."""
        self.set_opt_in("attn.hook_result", enabled)

    # --------------------------------------------------------------- forward

    def forward(
        self,
        input: str | list[str] | torch.Tensor,
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        attention_mask: torch.Tensor | None = None,
        stop_at_layer: int | None = None,
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        **hf_kwargs: Any,
    ) -> Any:
        """Run the model.

        ``input``: text, a list of texts (padded, with the attention mask built for you) or
        tokens ``[batch, pos]``. ``return_type``: ``"logits"``, ``"loss"``, ``"both"`` (logits, loss),
        ``"hidden"`` (final normalized residual stream) or ``None``. ``stop_at_layer=k`` runs
        blocks ``0..k-1`` and returns the residual stream entering block ``k``.
        """
        self._check_usable()
        if self._uses_seam and not seam.is_routed(self.hf_model):
            raise BridgeError(
                f"the attention implementation of the HF model was changed to "
                f"{self.hf_model.config._attn_implementation!r} after wrapping, so attention no longer goes "
                f"through the bridge and its attention hooks would not fire. Change it through the bridge "
                f"instead: `model.set_attn_implementation({self.hf_model.config._attn_implementation!r})`."
            )
        tokens, attention_mask = self._tokens.prepare(input, attention_mask, prepend_bos, padding_side)
        tokens = tokens.to(self._device())
        if attention_mask is not None:
            attention_mask = attention_mask.to(tokens.device)
            hf_kwargs.setdefault("attention_mask", attention_mask)
        if self._takes_position_ids:
            hf_kwargs.setdefault("position_ids", position_ids_for(tokens, attention_mask))
        if return_type in ("logits", "loss", "both") and self.unembed is None:
            raise NoLMHeadError(
                f"{type(self.hf_model).__name__} has no LM head, so it gives no logits or loss; "
                "use return_type='hidden' or None, or load the *ForCausalLM class."
            )
        if return_type == "hidden" and self.unembed is not None:
            hf_kwargs["output_hidden_states"] = True
        hf_kwargs.setdefault("use_cache", False)
        with self._running(), self._stopping_at(stop_at_layer), self._checkpointing_paused():
            try:
                out = self.hf_model(input_ids=tokens, **hf_kwargs)
            except _StopForward as stop:
                return stop.residual
        if return_type is None:
            return None
        if return_type == "hidden":
            return out.hidden_states[-1] if self.unembed is not None else out.last_hidden_state
        logits = out.logits
        if return_type == "logits":
            return logits
        loss = lm_loss(logits, tokens, attention_mask, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    @contextlib.contextmanager
    def _stopping_at(self, layer: int | None) -> Iterator[None]:
        if layer is None:
            yield
            return
        n = self.cfg.n_layers
        if layer < 0:
            layer += n
        if not 0 <= layer <= n:
            raise BridgeError(f"stop_at_layer must be in [-{n}, {n}], got {layer}")
        target = self._hf_blocks[layer] if layer < n else self._hf_ln_final
        if target is None:
            raise BridgeError("stop_at_layer=n_layers needs a final norm in the component map")

        def stop(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            raise _StopForward(args[0] if args else next(iter(kwargs.values())))

        handle = target.register_forward_pre_hook(stop, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def _device(self) -> torch.device:
        try:
            return next(self.hf_model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    # ------------------------------------------------------------ tokenizing

    def to_tokens(
        self,
        input: str | list[str],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
    ) -> torch.Tensor:
        """Text to tokens ``[batch, pos]``; a BOS token is prepended unless ``prepend_bos=False``."""
        return self._tokens.encode(input, prepend_bos, padding_side)[0].to(self._device())

    def to_string(self, tokens: torch.Tensor | Sequence[int]) -> str | list[str]:
        return self._tokens.decode(tokens)

    def to_str_tokens(self, input: str | torch.Tensor | Sequence[int], prepend_bos: bool | None = None) -> list[str]:
        return self._tokens.str_tokens(input, prepend_bos)

    # ------------------------------------------------------------- lifecycle

    def detach(self) -> None:
        """Remove every hook and give the HF model back exactly as it was; the bridge is unusable after."""
        self._detached = True
        self._release()

    def set_attn_implementation(self, name: str) -> None:
        """Change the HF attention implementation the bridge calls when no attention hook needs its own
        (``"sdpa"``, ``"eager"``…); attention hooks keep working."""
        self._check_usable()
        if not self._uses_seam:
            self.hf_model.set_attn_implementation(name)
            return
        seam.disable(self.hf_model)
        try:
            self.hf_model.set_attn_implementation(name)
        finally:
            seam.enable(self.hf_model)

    def _check_usable(self, detached_ok: bool = False) -> None:
        if self._detached and not detached_ok:
            raise BridgeError(
                "this bridge was detached (by `.detach()`, `bridge.unwrap(hf_model)` or a `replace=True` wrap); "
                "it no longer runs or takes hooks. Wrap the model again: `bridge.wrap(hf_model)`."
            )
        running = self._running_in
        if running is not None and running != threading.get_ident():
            raise ConcurrentUseError(
                "this bridge is running a forward pass in another thread; a bridge's hooks are shared by every "
                "thread, so one bridge must not be used from two threads at once. Give each thread its own "
                "bridge (`copy.deepcopy(model)`), or serialise the calls with a lock."
            )

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """Mark a forward pass in flight in this thread (re-entrant within the thread)."""
        me = threading.get_ident()
        with self._lock:
            if self._running_in not in (None, me):
                self._check_usable()
            self._running_in = me
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if not self._depth:
                    self._running_in = None

    @contextlib.contextmanager
    def _checkpointing_paused(self) -> Iterator[None]:
        """Run without gradient checkpointing while hooks are in use and gradients are recorded.

        Checkpointing recomputes blocks during ``backward()``, after temporary hooks are gone, so the
        gradients would be those of an unhooked model. Pausing it keeps them exact, at its memory cost."""
        hf = self.hf_model
        paused = []
        if hf.training and torch.is_grad_enabled() and any(p.active for p in self._hook_dict.values()):
            paused = [m for m in hf.modules() if getattr(m, "gradient_checkpointing", False) is True]
        if not paused:
            yield
            return
        warnings.warn(
            "bridge: gradient checkpointing is paused for forward passes with hooks (it would recompute blocks "
            "after the hooks are removed and give wrong gradients); this pass uses the memory of an "
            "uncheckpointed one.",
            stacklevel=4,
        )
        for module in paused:
            module.gradient_checkpointing = False
        try:
            yield
        finally:
            for module in paused:
                module.gradient_checkpointing = True

    # ---------------------------------------------------------- copies, pickling

    def __copy__(self) -> Bridge:
        raise BridgeError(
            "a shallow copy of a bridge would share its HF model and hooks; use `copy.deepcopy(model)` "
            "(a new bridge over a deep copy of the HF model)."
        )

    def __deepcopy__(self, memo: dict) -> Bridge:
        """A new bridge over a deep copy of the HF model, with the same opt-in settings and hooks."""
        self._check_usable()
        hf_copy = copy.deepcopy(self.hf_model, memo)
        clone = _rebuild(
            type(self),
            hf_copy,
            type(self.adapter),
            copy.deepcopy(self.cfg, memo),
            copy.deepcopy(self.tokenizer, memo),
            self._opt_in_state(),
        )
        for name, point in self._hook_dict.items():
            for handle in [*point.fwd_hooks, *point.bwd_hooks]:
                clone._hook_dict[name].add_hook(handle.fn, dir=handle.dir, is_permanent=handle.is_permanent)
        return clone

    def __reduce_ex__(self, protocol: int) -> tuple:
        self._check_usable()
        hooked = [name for name, point in self._hook_dict.items() if point.active]
        if hooked:
            raise BridgeError(
                f"cannot pickle a bridge with hooks attached ({', '.join(hooked[:3])}"
                f"{'…' if len(hooked) > 3 else ''}): hooks are functions and are not saved. Remove them first "
                "(`model.reset_hooks(including_permanent=True)`) and add them again after loading."
            )
        args = (type(self), self.hf_model, type(self.adapter), self.cfg, self.tokenizer, self._opt_in_state())
        return _rebuild, args

    def _opt_in_state(self) -> dict[str, bool]:
        return {name: point.enabled for name, point in self._hook_dict.items() if point.opt_in}


def _rebuild(
    cls: type[Bridge],
    hf_model: nn.Module,
    adapter_cls: type[Adapter],
    cfg: BridgeConfig,
    tokenizer: Any,
    opt_in: dict[str, bool],
) -> Bridge:
    """Bridge ``hf_model`` as ``wrap`` does, with the given config and opt-in settings (copies, unpickling)."""
    from bridge.plugins import get_registry

    model = cls(hf_model, adapter_cls(hf_model.config), cfg, tokenizer)
    try:
        get_registry().pm.hook.bridge_ready(bridge=model)
    except BaseException:
        model.detach()
        raise
    for name, enabled in opt_in.items():
        model._hook_dict[name].enabled = enabled
    for component in model.components():
        component.sync()
    return model


def position_ids_for(tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Positions ``[b, p]`` counting real tokens only, so a left-padded sequence gets the
    positions it would have alone (as HF ``generate`` does); explicit so position hooks are batched."""
    if attention_mask is None:
        return torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape)
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 1)


def lm_loss(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    per_token: bool = False,
) -> torch.Tensor:
    """Next-token cross-entropy; with a mask, padded targets are left out of the mean."""
    log_probs = logits[:, :-1].float().log_softmax(-1)  # [b, p-1, vocab]
    nll = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]  # [b, p-1]
    if per_token:
        return nll
    if attention_mask is None:
        return nll.mean()
    valid = (attention_mask[:, 1:] * attention_mask[:, :-1]).to(nll.dtype)
    return (nll * valid).sum() / valid.sum()
