"""``Bridge``: an HF model with TransformerLens-style hook points."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import nn

from bridge import seam
from bridge.adapter import Adapter
from bridge.cache import ActivationCache
from bridge.components.base import Component
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


class Bridge(WeightViews, WeightProcessing, Generation, nn.Module):
    """An HF model with named hook points; call it like a TransformerLens ``HookedTransformer``.

    Build one with ``bridge.load`` or ``bridge.wrap``. The HF model stays intact
    (``bridge.hf_model``): components only reach into it while their hooks are in use.
    """

    def __init__(self, hf_model: nn.Module, adapter: Adapter, cfg: BridgeConfig, tokenizer: Any = None) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.adapter = adapter
        self.cfg = cfg
        self.tokenizer = tokenizer
        self._tokens = TokenizerHelper(tokenizer, cfg)
        try:
            self._build(adapter.component_map(cfg))
            for component in self.components():
                component.bind()
            if any(component.uses_seam for component in self.components()):
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
        for name, hook in self._hook_dict.items():
            hook.name = name
        forward_params = inspect.signature(hf_model.forward).parameters
        self._takes_position_ids = "position_ids" in forward_params

    def _build(self, cmap: Any) -> None:
        base = self.hf_model.base_model
        if cmap.embed is not None:
            self.hook_embed = HookPoint()
            self.embed = Embedding(base.get_submodule(cmap.embed), self.cfg, hook=self.hook_embed)
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
        return [
            point.add_hook(hook, dir=dir, is_permanent=is_permanent, prepend=prepend)
            for point in self._select(name, explicit_opt_in_error=True)
        ]

    def reset_hooks(self, including_permanent: bool = False) -> None:
        """Remove every hook added to this bridge (permanent ones only if asked)."""
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
        tokens, attention_mask = self._tokens.prepare(input, attention_mask, prepend_bos, padding_side)
        tokens = tokens.to(self._device())
        if attention_mask is not None:
            attention_mask = attention_mask.to(tokens.device)
            hf_kwargs.setdefault("attention_mask", attention_mask)
        past = past_length(hf_kwargs.get("past_key_values"))
        if hf_kwargs.get("past_key_values") is not None:
            hf_kwargs.setdefault("use_cache", True)
            if attention_mask is not None and attention_mask.shape[1] != past + tokens.shape[1]:
                raise BridgeError(
                    f"with {past} cached positions and {tokens.shape[1]} new tokens the attention mask must cover "
                    f"{past + tokens.shape[1]} positions (cached + new), got {attention_mask.shape[1]}; "
                    "extend the mask used for the cached prefix with the new tokens' mask."
                )
        if self._takes_position_ids:
            hf_kwargs.setdefault("position_ids", position_ids_for(tokens, attention_mask, past))
        if return_type in ("logits", "loss", "both") and self.unembed is None:
            raise NoLMHeadError(
                f"{type(self.hf_model).__name__} has no LM head, so it gives no logits or loss; "
                "use return_type='hidden' or None, or load the *ForCausalLM class."
            )
        if return_type == "hidden" and self.unembed is not None:
            hf_kwargs["output_hidden_states"] = True
        hf_kwargs.setdefault("use_cache", False)
        with self._stopping_at(stop_at_layer):
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
        """Remove every hook and give the HF model back exactly as it was."""
        for point in getattr(self, "_hook_dict", {}).values():
            point.remove_hooks("both", including_permanent=True)
        for component in self.components():
            component.detach_all()
        seam.disable(self.hf_model)


def past_length(past_key_values: Any) -> int:
    """Positions already in an HF KV cache (0 without one)."""
    return 0 if past_key_values is None else int(past_key_values.get_seq_length())


def position_ids_for(tokens: torch.Tensor, attention_mask: torch.Tensor | None, past: int = 0) -> torch.Tensor:
    """Positions ``[b, p]`` counting real tokens only, so a left-padded sequence gets the
    positions it would have alone (as HF ``generate`` does); explicit so position hooks are batched.
    With ``past`` cached positions, the mask covers ``past + p`` positions and the new tokens
    continue where the cache ends."""
    if attention_mask is None:
        return torch.arange(past, past + tokens.shape[1], device=tokens.device).expand(tokens.shape)
    position_ids = attention_mask.long().cumsum(-1) - 1  # [b, past + p]
    return position_ids.masked_fill(attention_mask == 0, 1)[:, past:]


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
