"""``HookedModel``: an HF model with TransformerLens-style hook points, the hooks API and ``forward``.

The kernel's model: what every family's components plug into. ``bridge.Bridge`` adds the analysis layer's
weight views, weight processing, generation and SAE splicing on top of it."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from bridge.kernel import seam
from bridge.kernel.adapter import Adapter, ComponentMap, Composite
from bridge.kernel.aliases import canonical_name
from bridge.kernel.cache import PlainActivationCache, keep_positions
from bridge.kernel.caching_hooks import CachingHooks
from bridge.kernel.components.base import Component, ForwardOverride
from bridge.kernel.components.blocks import first_output
from bridge.kernel.config import BridgeConfig
from bridge.kernel.dispatch import input_device, is_dispatched
from bridge.kernel.errors import BadInputError, BridgeError, NoLMHeadError, OptInHookError, unknown_hook_error
from bridge.kernel.fingerprint import weights_digest
from bridge.kernel.hook_points import HookFn, HookHandle, HookPoint
from bridge.kernel.lifecycle import ConcurrentUseError, Lifecycle
from bridge.kernel.loss import labelled_loss, lm_loss
from bridge.kernel.map_checks import check_component_map
from bridge.kernel.model_inputs import DEFAULT_RETURN_TYPE, ModelInputs
from bridge.kernel.slicing import Slice, SliceInput
from bridge.kernel.tokens import TokenizerHelper
from bridge.kernel.towers import TowerModule, build_composite, build_map
from bridge.kernel.validation import (
    HF_PASSTHROUGH,
    NAMED_PASSTHROUGH,
    check_kwargs,
    check_residual,
    check_return_type,
    check_tokens,
)

NamesFilter = str | Sequence[str] | Callable[[str], bool] | None
HookSpec = tuple[str | Callable[[str], bool], HookFn]
ReturnType = Literal["logits", "loss", "both", "hidden"] | None
#: ``run_with_cache``'s own keyword arguments (the rest go to ``forward``).
CACHE_KWARGS = ("names_filter", "device", "remove_batch_dim", "incl_bwd", "reset_hooks_end", "pos_slice")
#: cfg flag -> the opt-in hook points (name suffixes) it reflects.
OPT_IN_FLAGS = {
    "use_attn_result": ("hook_result",),
    "use_split_qkv_input": ("hook_q_input", "hook_k_input", "hook_v_input"),
    "use_attn_in": ("hook_attn_in",),
    "use_hook_mlp_in": ("hook_mlp_in",),
}


class _StopForward(Exception):
    def __init__(self, residual: torch.Tensor) -> None:
        self.residual = residual


def decoder_start_token_id(hf_config: Any) -> int | None:
    """The token an encoder-decoder's decoder starts from: the config's ``decoder_start_token_id``, else its
    ``bos_token_id``, as HF's ``generate`` does (T5Gemma names only the latter)."""
    start = getattr(hf_config, "decoder_start_token_id", None)
    return start if start is not None else getattr(hf_config, "bos_token_id", None)


class HookedModel(CachingHooks, Lifecycle, nn.Module):
    """An HF model with named hook points; call it like a TransformerLens ``HookedTransformer``.

    Build one with ``bridge.load`` or ``bridge.wrap``. The HF model stays intact
    (``bridge.hf_model``): components only reach into it while their hooks are in use.
    A model has one bridge at a time; hooks are shared by every thread, so use a bridge from one
    thread at a time (a second thread raises ``ConcurrentUseError``; give it a ``copy.deepcopy``).
    """

    #: The class ``run_with_cache`` returns its activations in (``bridge.Bridge`` uses the analysis-capable
    #: ``bridge.ActivationCache``).
    cache_class: ClassVar[type[PlainActivationCache]] = PlainActivationCache

    def __init__(
        self,
        hf_model: nn.Module,
        adapter: Adapter,
        cfg: BridgeConfig,
        tokenizer: Any = None,
        image_processor: Any = None,
        processor: Any = None,
    ) -> None:
        super().__init__()
        teardown = self._start_lifecycle(hf_model)
        self.hf_model = hf_model
        self.adapter = adapter
        self.cfg = cfg
        self.tokenizer = tokenizer
        self._tokens = TokenizerHelper(tokenizer, cfg)
        self.image_processor = image_processor
        #: A vision-language model's processor (text and images together, image tokens put into the text).
        self.processor = processor
        self._inputs = ModelInputs(hf_model, adapter)
        try:
            cmap = adapter.component_map(cfg)
            check_component_map(type(adapter).__name__, hf_model, cmap)
            self._build(cmap)
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
        self._dispatched = is_dispatched(hf_model)
        for name, hook in self._hook_dict.items():
            hook.name = name
            hook.move_outputs = self._dispatched
        forward_params = inspect.signature(hf_model.forward).parameters
        self._takes_position_ids = "position_ids" in forward_params and not adapter.computes_positions
        takes_any = any(p.kind is p.VAR_KEYWORD for p in forward_params.values())
        general = HF_PASSTHROUGH - NAMED_PASSTHROUGH
        self._hf_passthrough = (general if takes_any else general & set(forward_params)) | (
            NAMED_PASSTHROUGH & set(forward_params)
        )
        self._fill_cfg()
        self.train(hf_model.training)

    @property
    def training(self) -> bool:  # type: ignore[override]
        """The HF model's mode: ``bridge.train()``/``.eval()`` set it, and it follows ``hf_model``'s."""
        hf_model = self.__dict__.get("_modules", {}).get("hf_model")
        return hf_model.training if hf_model is not None else self.__dict__.get("_training", True)

    @training.setter
    def training(self, mode: bool) -> None:
        hf_model = self.__dict__.get("_modules", {}).get("hf_model")
        if hf_model is None:
            self.__dict__["_training"] = mode
        elif hf_model.training != mode:
            hf_model.train(mode)

    def _fill_cfg(self) -> None:
        """The cfg fields known only once the model is built (TransformerLens reads them)."""
        cfg = self.cfg
        cfg.tokenizer_prepends_bos = self._tokens.prepends_bos()
        side = getattr(self.tokenizer, "padding_side", None)
        if side in ("left", "right"):
            cfg.default_padding_side = side
        cfg.gated_mlp = cfg.gated_mlp or any(hasattr(getattr(b, "mlp", None), "hook_pre_linear") for b in self.blocks)
        blocks = list(self.blocks)
        cfg.attn_only = bool(blocks) and all(hasattr(b, "attn") and not hasattr(b, "mlp") for b in blocks)
        towers = [m for m in self.children() if isinstance(m, TowerModule)]
        hf_blocks = self._hf_blocks or [block for tower in towers for block in tower._hf_blocks]
        cfg.n_params = sum(p.numel() for block in hf_blocks for p in block.parameters() if p.ndim >= 2)
        if self.unembed is not None and getattr(self.unembed, "weight", None) is not None:
            cfg.d_vocab_out = self.unembed.weight.shape[0]
        if not cfg.model_name:
            name = str(getattr(self.hf_model.config, "_name_or_path", "") or "")
            cfg.model_name = name.rstrip("/").rsplit("/", 1)[-1]
        self._sync_opt_in_flags()

    def _sync_opt_in_flags(self) -> None:
        for flag, suffixes in OPT_IN_FLAGS.items():
            points = [h for n, h in self._hook_dict.items() if h.opt_in and n.endswith(suffixes)]
            setattr(self.cfg, flag, any(h.enabled for h in points))

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

    def _build(self, cmap: ComponentMap | Composite) -> None:
        if isinstance(cmap, Composite):
            build_composite(self, self.hf_model, cmap, self.cfg)
        else:
            build_map(self, self.hf_model, cmap, self.cfg)

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

    def activation_fingerprint(self) -> dict[str, Any]:
        """What decides this model's activations besides its input, JSON-able and stable across processes: a
        digest of every parameter and buffer, the weight processing done, and what each active hook point does
        (its hooks' functions; a spliced SAE's digest). Equal fingerprints: the same activations for the same
        input (hook functions are compared by name, not by code)."""
        return {
            "weights_sha256": weights_digest(self.hf_model),
            "weight_processing": list(self.cfg.extra.get("weight_processing", [])),
            "hook_points": {name: point.fingerprint() for name, point in self._hook_dict.items() if point.active},
        }

    def _canonical(self, name: str) -> str:
        """The canonical name behind a TransformerLens 4 spelling (``blocks.1.hook_in`` is ``hook_resid_pre``,
        ``blocks.1.attn.hook_q_input`` is the block's ``hook_q_input``; see ``bridge.kernel.aliases``)."""
        return canonical_name(name, self._hook_dict)

    def _select(self, names: str | Callable[[str], bool]) -> list[HookPoint]:
        """The hook points a name (canonicalized; an unknown or disabled opt-in one raises) or a filter
        (enabled ones only) selects."""
        if callable(names):
            return [h for n, h in self._hook_dict.items() if names(n) and h.enabled]
        names = self._canonical(names)
        if names not in self._hook_dict:
            raise unknown_hook_error(names, self._hook_dict)
        hook = self._hook_dict[names]
        if not hook.enabled:
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
            point.add_hook(hook, dir=dir, is_permanent=is_permanent, prepend=prepend) for point in self._select(name)
        ]

    def add_perma_hook(
        self, name: str | Callable[[str], bool], hook: HookFn, dir: Literal["fwd", "bwd"] = "fwd"
    ) -> list[HookHandle]:
        """Add a hook that ``reset_hooks()`` keeps (only ``including_permanent=True`` removes it)."""
        return self.add_hook(name, hook, dir=dir, is_permanent=True)

    def remove_all_hook_fns(
        self, direction: Literal["fwd", "bwd", "both"] = "both", including_permanent: bool = False
    ) -> None:
        """Remove the hooks of one direction (or both) from every hook point."""
        if direction not in ("fwd", "bwd", "both"):
            raise BridgeError(f"direction must be 'fwd', 'bwd' or 'both', got {direction!r}")
        for point in self._hook_dict.values():
            point.remove_hooks(direction, including_permanent=including_permanent)

    def clear_contexts(self) -> None:
        """Empty every hook point's ``ctx``."""
        for point in self._hook_dict.values():
            point.clear_context()

    def reset_hooks(
        self,
        clear_contexts: bool = True,
        direction: Literal["fwd", "bwd", "both"] = "both",
        including_permanent: bool = False,
    ) -> None:
        """Remove every hook added to this bridge (permanent ones only if asked) and empty the hooks' ``ctx``."""
        self._check_usable(detached_ok=True)
        if clear_contexts:
            self.clear_contexts()
        self.remove_all_hook_fns(direction, including_permanent=including_permanent)

    @property
    def mod_dict(self) -> dict[str, nn.Module]:
        """Every bridge module (components and hook points) by canonical name; the HF modules are not included."""
        return {
            name: module
            for child_name, child in self.named_children()
            if isinstance(child, Component | HookPoint | nn.ModuleList)  # not hf_model
            for name, module in child.named_modules(prefix=child_name)
        }

    @contextlib.contextmanager
    def hooks(
        self,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
    ) -> Iterator[HookedModel]:
        """Attach hooks for the duration of a ``with`` block; exactly those are removed at exit
        (and every hook point's ``ctx`` emptied, with ``clear_contexts``)."""
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
            if clear_contexts:
                self.clear_contexts()

    def run_with_hooks(
        self,
        *args: Any,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run a forward pass with temporary hooks. Arguments after the hooks go to ``forward``."""
        own = ("fwd_hooks", "bwd_hooks", "reset_hooks_end", "clear_contexts")
        self._check_forward_kwargs("run_with_hooks", kwargs, own)
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts):
            return self(*args, **kwargs)

    def _names(self, names_filter: NamesFilter) -> list[str]:
        """The canonical names of the hook points ``names_filter`` selects (``_select`` each name once)."""
        if names_filter is None:
            return [n for n, h in self._hook_dict.items() if h.enabled]
        if isinstance(names_filter, str):
            names_filter = [names_filter]
        elif not callable(names_filter):
            names_filter = list(names_filter)  # a generator would be used up by the checks below
        if callable(names_filter):
            return [n for n, h in self._hook_dict.items() if h.enabled and names_filter(n)]
        return [point.name for name in names_filter for point in self._select(name)]

    def run_with_cache(
        self,
        *args: Any,
        names_filter: NamesFilter = None,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        incl_bwd: bool = False,
        reset_hooks_end: bool = True,
        pos_slice: Slice | SliceInput = None,
        **kwargs: Any,
    ) -> tuple[Any, PlainActivationCache]:
        """Run a forward pass and cache the activations the filter selects.

        ``names_filter``: a hook name, a list of names, or a predicate on names (default:
        every enabled hook point). ``incl_bwd`` also backpropagates the (scalar) output and
        caches gradients under ``name + "_grad"``. ``pos_slice`` keeps only those positions of
        each activation (the query position of patterns and scores), e.g. ``-1`` for the last.
        ``device`` (e.g. ``"cpu"``): each activation is moved there when its hook fires and only the
        moved copy is kept, so an activation on an accelerator is freed as soon as the forward pass is
        done with it (with the model on that same device, nothing moves).
        """
        self._check_forward_kwargs("run_with_cache", kwargs, CACHE_KWARGS)
        store: dict[str, torch.Tensor] = {}
        positions = Slice.unwrap(pos_slice)

        def save(tensor: torch.Tensor, hook: HookPoint) -> None:
            kept = keep_positions(tensor.detach(), hook.name, positions)
            store[hook.name] = kept if device is None else kept.to(device)

        def save_grad(grad: torch.Tensor, hook: HookPoint) -> None:
            kept = keep_positions(grad.detach(), hook.name, positions)
            store[f"{hook.name}_grad"] = kept if device is None else kept.to(device)

        names = self._names(names_filter)
        fwd = [(n, save) for n in names]
        bwd = [(n, save_grad) for n in names] if incl_bwd else []
        with self.hooks(fwd, bwd, reset_hooks_end=reset_hooks_end):
            out = self(*args, **kwargs)
            if incl_bwd:
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise BridgeError("incl_bwd=True needs a scalar output: pass return_type='loss'")
                out.backward()
        cache = self.cache_class(store, n_layers=self.cfg.n_layers, model=self)
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
        self._sync_opt_in_flags()

    def set_use_attn_result(self, enabled: bool) -> None:
        """TransformerLens's switch for the per-head ``attn.hook_result``."""
        self.set_opt_in("attn.hook_result", enabled)

    def set_use_split_qkv_input(self, enabled: bool) -> None:
        """TransformerLens's switch for the per-head ``hook_q_input``/``hook_k_input``/``hook_v_input``."""
        for suffix in OPT_IN_FLAGS["use_split_qkv_input"]:
            self.set_opt_in(suffix, enabled)

    def set_use_attn_in(self, enabled: bool) -> None:
        """TransformerLens's switch for ``blocks.{i}.hook_attn_in`` ``[b, p, n_heads, d_model]``."""
        self.set_opt_in("hook_attn_in", enabled)

    def set_use_hook_mlp_in(self, enabled: bool) -> None:
        """TransformerLens's switch for ``blocks.{i}.hook_mlp_in`` ``[b, p, d_model]``."""
        self.set_opt_in("hook_mlp_in", enabled)

    # --------------------------------------------------------------- forward

    def forward(
        self,
        input: str | list[str] | torch.Tensor | None = None,
        return_type: ReturnType = DEFAULT_RETURN_TYPE,
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        start_at_layer: int | None = None,
        tokens: torch.Tensor | None = None,
        shortformer_pos_embed: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        stop_at_layer: int | None = None,
        past_kv_cache: Any = None,
        pixel_values: Any = None,
        input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        decoder_input: Any = None,
        **hf_kwargs: Any,
    ) -> Any:
        """Run the model.

        ``input``: text, a list of texts (padded, with the attention mask built for you) or
        tokens ``[batch, pos]``; with ``start_at_layer=k``, the residual stream ``[batch, pos, d_model]``
        entering block ``k`` (blocks ``k..`` run; pass ``tokens=`` for a loss). ``return_type``:
        ``"logits"``, ``"loss"``, ``"both"`` (logits, loss), ``"hidden"`` (the residual stream after ``ln_final``,
        ``[batch, pos, d_model]``) or ``None``. ``stop_at_layer=k`` runs blocks ``..k-1`` and returns the
        residual stream entering block ``k``. Further keyword arguments must be HF ones bridge passes through
        (``past_key_values``, ``use_cache``, ``position_ids``…); anything else raises.

        Image models (see ``bridge.model_inputs``) take pixel values ``[batch, channels, height, width]``,
        images (PIL images, arrays or uint8 tensors, through the image processor) or a dict of HF inputs as
        ``input`` (two-tower models: the text as ``input``, the images as ``pixel_values=``) and return what their
        adapter's ``output_fields`` name; by default their natural output (``"logits"`` where they have logits,
        else ``"hidden"``).
        Vision-language models are language models that also take ``pixel_values=`` (pixel values, or images with
        text through their processor) or the processor's output as ``input``. ``input_ids=`` is HF's name for
        the input tokens. A mapping of HF inputs with ``input_ids`` (a tokenizer's output, with ``token_type_ids``…)
        is also an input.

        Models whose loss is scored against labels (``Adapter.loss_kind == "labels"``: masked language models,
        sequence-to-sequence models, classifiers) take ``labels=`` for ``return_type="loss"``/``"both"``: token ids
        ``[b, p]`` (-100 where a position is not scored, e.g. the unmasked positions of a masked LM) or a class per
        sequence ``[b]``. Encoder-decoder models read the encoder's input as ``input`` and the decoder's as
        ``decoder_input=`` (text or tokens ``[b, q]``; HF's ``decoder_input_ids=`` also works); without either, the
        decoder reads its start token, or ``labels`` shifted right as HF does. A speech-to-text encoder-decoder
        (Whisper) reads audio features (a float tensor or array) or a feature extractor's output as ``input``.
        """
        self._check_usable()
        if self._uses_seam and not seam.is_routed(self.hf_model):
            raise BridgeError(
                f"the attention implementation of the HF model was changed to "
                f"{self.hf_model.config._attn_implementation!r} after wrapping, so attention no longer goes "
                f"through the bridge and its attention hooks would not fire. Change it through the bridge "
                f"instead: `model.set_attn_implementation({self.hf_model.config._attn_implementation!r})`."
            )
        self._check_forward_kwargs("forward", hf_kwargs)
        if input_ids is not None:
            if input is not None:
                raise BadInputError("input_ids= is the input tokens: pass them either as the input or as input_ids=.")
            input = input_ids
        if isinstance(input, Mapping) and self._inputs.reads_mappings_as_language:
            input, mask, extra = self._inputs.split_language_mapping(dict(input), attention_mask)
            attention_mask = mask
            hf_kwargs.update(extra)
        if self._inputs.language_with_audio:
            return self._run_audio(
                input,
                pixel_values,
                start_at_layer,
                tokens,
                attention_mask,
                return_type,
                loss_per_token,
                stop_at_layer,
                labels,
                decoder_input,
                hf_kwargs,
            )
        if self._inputs.language_with_images:
            input, attention_mask, images = self._inputs.language_inputs(
                input, pixel_values, attention_mask, self.image_processor, self.processor
            )
            device = self._device()
            hf_kwargs.update({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in images.items()})
        elif self._inputs.applies(input, pixel_values):
            if start_at_layer is not None or tokens is not None:
                raise BadInputError(f"start_at_layer and tokens= are for language models, not {self.cfg.architecture}.")
            return self._run_inputs(
                input, pixel_values, return_type, attention_mask, prepend_bos, padding_side, stop_at_layer, hf_kwargs
            )
        check_return_type(return_type)
        if shortformer_pos_embed is not None:
            raise BadInputError("shortformer_pos_embed is not used: no model bridged here has shortformer positions.")
        if past_kv_cache is not None:
            raise BadInputError(
                "past_kv_cache takes TransformerLens's cache class; pass HF's cache as past_key_values=... "
                "(with use_cache=True) instead."
            )
        if decoder_input is not None or self._is_encoder_decoder:
            self._decoder_inputs(decoder_input, labels, hf_kwargs)
        if start_at_layer is not None:
            return self._forward_from(
                start_at_layer, input, tokens, attention_mask, return_type, loss_per_token, stop_at_layer, hf_kwargs
            )
        if tokens is not None:
            if input is not None:
                raise BadInputError("tokens= is only used with start_at_layer; pass the tokens as the input instead.")
            input = tokens
        if input is None:
            raise BadInputError("forward needs an input: text, a list of texts, or tokens [batch, pos].")
        tokens, attention_mask = self._tokens.prepare(
            input,
            attention_mask,
            prepend_bos,
            padding_side,
            self._d_vocab_in(),
            None if hf_kwargs.get("past_key_values") is None else past_length(hf_kwargs["past_key_values"]),
        )
        return self._run(tokens, attention_mask, return_type, loss_per_token, stop_at_layer, hf_kwargs, labels)

    def _run_audio(
        self,
        input: Any,
        pixel_values: Any,
        start_at_layer: int | None,
        tokens: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        return_type: ReturnType,
        loss_per_token: bool,
        stop_at_layer: int | None,
        labels: torch.Tensor | None,
        decoder_input: Any,
        hf_kwargs: dict[str, Any],
    ) -> Any:
        """A speech-to-text model (Whisper): the audio (or the feature extractor's output) goes to the encoder, the
        decoder's tokens as ``decoder_input=``; returns what a language model returns."""
        if pixel_values is not None or start_at_layer is not None or tokens is not None:
            raise BadInputError(
                f"{self.cfg.architecture} reads audio and decoder tokens: pass the audio as the input and the "
                "decoder's tokens as decoder_input= (pixel_values=, start_at_layer and tokens= are not for it)."
            )
        check_return_type(return_type)
        device = self._device()
        audio = self._inputs.audio_language_inputs(input)
        hf_kwargs.update({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in audio.items()})
        if attention_mask is not None:
            hf_kwargs.setdefault("attention_mask", attention_mask.to(device))
        self._decoder_inputs(decoder_input, labels, hf_kwargs)
        return self._run(None, None, return_type, loss_per_token, stop_at_layer, hf_kwargs, labels)

    @property
    def _is_encoder_decoder(self) -> bool:
        return bool(getattr(self.hf_model.config, "is_encoder_decoder", False))

    def _decoder_inputs(self, decoder_input: Any, labels: torch.Tensor | None, hf_kwargs: dict[str, Any]) -> None:
        """An encoder-decoder's decoder tokens into ``hf_kwargs["decoder_input_ids"]`` (and their mask): the
        ``decoder_input`` given (text, texts or tokens), else HF's ``decoder_input_ids=``, else ``labels`` shifted
        right (HF does it), else each row's decoder start token."""
        if not self._is_encoder_decoder:
            raise BadInputError(f"decoder_input= is for encoder-decoder models; {self.cfg.architecture} is not one.")
        if decoder_input is not None:
            if hf_kwargs.get("decoder_input_ids") is not None:
                raise BadInputError("pass the decoder's tokens either as decoder_input= or as decoder_input_ids=.")
            tokens, mask = self._tokens.prepare(decoder_input, None, False, "right", self._d_vocab_in())
            hf_kwargs["decoder_input_ids"] = tokens.to(self._device())
            if mask is not None:
                hf_kwargs.setdefault("decoder_attention_mask", mask.to(self._device()))
        elif hf_kwargs.get("decoder_input_ids") is None and labels is None:
            if decoder_start_token_id(self.hf_model.config) is None:
                raise BadInputError(
                    "this model's config names no decoder_start_token_id (nor bos_token_id): pass decoder_input=."
                )
            hf_kwargs["decoder_input_ids"] = None  # filled once the batch size is known (in _run)
        elif hf_kwargs.get("decoder_input_ids") is None:
            hf_kwargs["labels"] = labels  # HF shifts the labels right into the decoder's input

    def image_token_positions(
        self,
        input: Any = None,
        pixel_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        **hf_kwargs: Any,
    ) -> list[Any]:
        """Vision-language models: where each image's tokens sit in the sequence, one entry per image in order
        (with bridge-vision, an ``ImageTokens``: ``batch``, ``positions`` and ``rows`` of
        ``vision_projector.hook_out``), so that "patch the tokens of image 2" is one line. Takes what ``forward``
        takes (the processor's output, or tokens with ``pixel_values=`` and the HF image inputs); runs nothing."""
        self._check_usable()
        locate = getattr(self.adapter, "image_token_positions", None)
        if locate is None or not self._inputs.language_with_images:
            raise BridgeError(
                f"{self.cfg.architecture or type(self.hf_model).__name__} is not a vision-language model: "
                "its inputs hold no image tokens."
            )
        if input_ids is not None:
            input = input_ids
        input, attention_mask, images = self._inputs.language_inputs(
            input, pixel_values, attention_mask, self.image_processor, self.processor
        )
        tokens, _ = self._tokens.prepare(input, attention_mask, None, None, self._d_vocab_in())
        return locate({"input_ids": tokens, **images, **hf_kwargs})

    def _run(
        self,
        tokens: torch.Tensor,
        attention_mask: torch.Tensor | None,
        return_type: ReturnType,
        loss_per_token: bool,
        stop_at_layer: int | None,
        hf_kwargs: dict[str, Any],
        labels: torch.Tensor | None = None,
    ) -> Any:
        """Run the HF model on checked tokens ``[b, p]`` and shape its output as ``return_type`` asks (``tokens``
        ``None``: a speech-to-text model, whose encoder's input is already in ``hf_kwargs``)."""
        if tokens is None:
            return self._run_model(None, None, return_type, loss_per_token, stop_at_layer, hf_kwargs, labels)
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
        positions = self.adapter.position_ids
        if self._takes_position_ids and positions != "model":
            ids = position_ids_for(tokens, attention_mask if positions == "real_tokens" else None, past)
            hf_kwargs.setdefault("position_ids", ids)
        return self._run_model(tokens, attention_mask, return_type, loss_per_token, stop_at_layer, hf_kwargs, labels)

    def _run_model(
        self,
        tokens: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        return_type: ReturnType,
        loss_per_token: bool,
        stop_at_layer: int | None,
        hf_kwargs: dict[str, Any],
        labels: torch.Tensor | None,
    ) -> Any:
        """The HF forward on ``tokens`` (``None``: the encoder's audio in ``hf_kwargs``) and ``hf_kwargs``, its
        output shaped as ``return_type`` asks."""
        if "decoder_input_ids" in hf_kwargs and hf_kwargs["decoder_input_ids"] is None:
            start = decoder_start_token_id(self.hf_model.config)
            encoder_input = tokens if tokens is not None else hf_kwargs[self.adapter.audio_input]
            batch = encoder_input.shape[0]
            hf_kwargs["decoder_input_ids"] = torch.full((batch, 1), start, device=encoder_input.device)
        labelled = self.adapter.loss_kind == "labels"
        if labels is not None and not labelled:
            raise BadInputError(
                f"labels= is for models whose loss is scored against labels (masked LMs, sequence-to-sequence "
                f"models, classifiers); {self.cfg.architecture}'s loss predicts each next token of the input."
            )
        if labelled and return_type in ("loss", "both") and labels is None:
            raise BadInputError(
                f"return_type={return_type!r} on {self.cfg.architecture} needs labels=: token ids [batch, pos] "
                "(-100 where a position is not scored) or a class per sequence [batch]."
            )
        if return_type in ("logits", "loss", "both") and self.unembed is None:
            raise NoLMHeadError(
                f"{type(self.hf_model).__name__} has no LM head, so it gives no logits or loss; "
                "use return_type='hidden' or None, or load the *ForCausalLM class."
            )
        if return_type in ("loss", "both") and stop_at_layer is None and not labelled and tokens.shape[1] < 2:
            raise BadInputError(
                f"return_type={return_type!r} needs at least 2 tokens per sequence (the loss predicts each next "
                f"token), got {tokens.shape[1]}."
            )
        hf_kwargs.setdefault("use_cache", False)
        final: list[torch.Tensor] = []
        with (
            self._running(),
            self._stopping_at(stop_at_layer),
            self._checkpointing_paused(),
            self._keeping_final_residual(final, return_type == "hidden"),
        ):
            try:
                out = self.hf_model(**({} if tokens is None else {"input_ids": tokens}), **hf_kwargs)
            except _StopForward as stop:
                return stop.residual
        if return_type is None:
            return None
        if return_type == "hidden":
            return final[-1] if final else out.last_hidden_state
        logits = out.logits
        if return_type == "logits":
            return logits
        if labelled:
            loss = labelled_loss(logits, labels, per_token=loss_per_token)
            return loss if return_type == "loss" else (logits, loss)
        mask = attention_mask[:, -tokens.shape[1] :] if attention_mask is not None else None  # cached ones off
        loss = lm_loss(logits, tokens, mask, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    @contextlib.contextmanager
    def _keeping_final_residual(self, into: list[torch.Tensor], wanted: bool) -> Iterator[None]:
        """What ``return_type="hidden"`` returns: the final residual stream after ``ln_final``
        ``[b, p, d_model]`` (the last block's output where there is no ``ln_final``), never what an HF
        head or projection (OPT's ``project_out``) makes of it. Appended to ``into`` per call."""
        module = self._hf_ln_final if self._hf_ln_final is not None else (self._hf_blocks or [None])[-1]
        if not wanted or module is None:
            yield
            return
        handle = module.register_forward_hook(lambda _m, _args, out: into.append(first_output(out)))
        try:
            yield
        finally:
            handle.remove()

    def _run_inputs(
        self,
        input: Any,
        pixel_values: Any,
        return_type: str | None,
        attention_mask: torch.Tensor | None,
        prepend_bos: bool | None,
        padding_side: Literal["left", "right"] | None,
        stop_at_layer: int | None,
        hf_kwargs: dict[str, Any],
    ) -> Any:
        """Run a model that is not a language model (image encoders, two-tower models) on its HF inputs."""
        return_type = self._inputs.resolve_return_type(return_type)
        if stop_at_layer is not None and not self._hf_blocks:
            raise BadInputError("stop_at_layer needs blocks at the top of the model; this one has towers.")

        def text(value: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
            return self._tokens.prepare(value, attention_mask, prepend_bos, padding_side, self._d_vocab_in())

        inputs = self._inputs.prepare(input, pixel_values, text, self.image_processor)
        device = self._device()
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if self._takes_position_ids and inputs.get("input_ids") is not None:  # HF's own positions, batched for hooks
            hf_kwargs.setdefault("position_ids", position_ids_for(inputs["input_ids"], None))
        with self._running(), self._stopping_at(stop_at_layer), self._checkpointing_paused():
            try:
                out = self.hf_model(**inputs, **hf_kwargs)
            except _StopForward as stop:
                return stop.residual
        return self._inputs.select(out, return_type)

    def _forward_from(
        self,
        layer: int,
        residual: Any,
        tokens: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        return_type: ReturnType,
        loss_per_token: bool,
        stop_at_layer: int | None,
        hf_kwargs: dict[str, Any],
    ) -> Any:
        """``start_at_layer``: the HF model runs on stand-in tokens, block ``layer`` gets ``residual``
        ``[b, p, d_model]`` instead of what the earlier blocks computed, and hooks before it stay silent."""
        residual = check_residual(residual, self.cfg)
        n = self.cfg.n_layers
        layer = self._layer_index("start_at_layer", layer)
        stop = n if stop_at_layer is None else self._layer_index("stop_at_layer", stop_at_layer)
        if stop < layer:
            raise BadInputError(f"stop_at_layer ({stop}) comes before start_at_layer ({layer}).")
        if tokens is None:
            if return_type in ("loss", "both"):
                raise BadInputError(f"return_type={return_type!r} with start_at_layer needs the tokens: pass tokens=.")
            tokens = torch.zeros(residual.shape[:2], dtype=torch.long)
        tokens = check_tokens(tokens, self.cfg, self._d_vocab_in())
        if tokens.shape != residual.shape[:2]:
            raise BadInputError(
                f"tokens have shape {tuple(tokens.shape)}, but the residual is {tuple(residual.shape)}: "
                "they must share [batch, pos]."
            )
        if attention_mask is not None:
            attention_mask = self._tokens.prepare(tokens, attention_mask, None, None, self._d_vocab_in())[1]
        if stop == layer and stop_at_layer is not None:
            return residual  # nothing to run
        target = self._hf_blocks[layer] if layer < n else self._hf_ln_final
        if target is None:  # the final norm and the unembedding run on the residual entering the final norm
            raise BadInputError(
                f"start_at_layer={n} (after the last block) needs a final norm in {type(self.adapter).__name__}'s "
                f"component map to hand the residual to; start at a block (0..{n - 1}) instead."
            )
        residual = residual.to(self._device())

        def replace_hidden(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (residual, *args[1:]), kwargs
            key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
            return args, {**kwargs, key: residual}

        handle = target.register_forward_pre_hook(replace_hidden, with_kwargs=True, prepend=True)
        try:
            with self._silenced(layer), self._skipping_blocks(layer, residual):
                return self._run(tokens, attention_mask, return_type, loss_per_token, stop_at_layer, hf_kwargs)
        finally:
            handle.remove()

    @contextlib.contextmanager
    def _skipping_blocks(self, layer: int, residual: torch.Tensor) -> Iterator[None]:
        """For the duration, the HF blocks before ``layer`` compute nothing: each returns ``residual`` in its
        own output format (its block component's ``block_output``), so ``start_at_layer=k`` costs only blocks
        ``k..``. Their output is replaced before block ``layer`` anyway. Blocks without a block component, and
        every block of a model accelerate dispatched, still run."""
        skipped: list[tuple[nn.Module, Any]] = []
        if not self._dispatched:
            for hf_block, block in zip(self._hf_blocks[:layer], list(self.blocks)[:layer], strict=True):
                block_output = getattr(block, "block_output", None)
                if block_output is None:
                    continue
                skipped.append((hf_block, hf_block.__dict__.get("forward")))
                hf_block.forward = _Returning(block_output(residual))
        try:
            yield
        finally:
            for hf_block, previous in reversed(skipped):
                if previous is None:
                    hf_block.__dict__.pop("forward", None)
                else:
                    hf_block.forward = previous

    @contextlib.contextmanager
    def _silenced(self, layer: int) -> Iterator[None]:
        """Hook points before block ``layer`` (embeddings, earlier blocks) see nothing for the duration."""
        quiet = [
            point
            for name, point in self._hook_dict.items()
            if (not name.startswith(("blocks.", "ln_final", "unembed")))
            or (name.startswith("blocks.") and point.layer() < layer)
        ]
        saved = [(point.fwd_hooks, point.bwd_hooks) for point in quiet]
        for point in quiet:
            point.fwd_hooks, point.bwd_hooks = [], []
        try:
            yield
        finally:
            for point, (fwd, bwd) in zip(quiet, saved, strict=True):
                point.fwd_hooks, point.bwd_hooks = fwd, bwd

    def _layer_index(self, what: str, layer: int) -> int:
        n = self.cfg.n_layers
        if not isinstance(layer, int) or not -n <= layer <= n:
            raise BadInputError(f"{what} must be an int in [-{n}, {n}], got {layer!r}")
        return layer + n if layer < 0 else layer

    def _check_forward_kwargs(self, where: str, kwargs: dict[str, Any], own: Sequence[str] = ()) -> None:
        if kwargs:
            check_kwargs(where, kwargs, [*own, *_own_parameters(type(self).forward), *self._hf_passthrough])

    def _d_vocab_in(self) -> int:
        """The number of token ids the input embedding accepts."""
        try:
            embeddings = self.hf_model.get_input_embeddings()
        except NotImplementedError:  # a composite model: the token embedding of the tower that has one
            towers = [m for m in self.children() if isinstance(m, TowerModule) and hasattr(m, "embed")]
            embeddings = towers[0].embed.hf if towers else None
        weight = getattr(embeddings, "weight", None)
        return weight.shape[0] if weight is not None and weight.ndim == 2 else self.cfg.d_vocab

    @contextlib.contextmanager
    def _stopping_at(self, layer: int | None) -> Iterator[None]:
        if layer is None:
            yield
            return
        n = self.cfg.n_layers
        layer = self._layer_index("stop_at_layer", layer)
        target = self._hf_blocks[layer] if layer < n else self._hf_ln_final
        if target is None:
            raise BridgeError("stop_at_layer=n_layers needs a final norm in the component map")

        def stop(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            raise _StopForward(args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()))))

        handle = target.register_forward_pre_hook(stop, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def _device(self) -> torch.device:
        """Where inputs go: the first parameter's device, or on a model accelerate dispatched, the
        execution device of its input embedding (``bridge.dispatch``)."""
        if self._dispatched:
            return input_device(self.hf_model)
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
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> torch.Tensor:
        """Text to tokens ``[batch, pos]``: BOS prepended unless ``prepend_bos=False``, padded on
        ``padding_side``, cut to ``n_ctx`` tokens unless ``truncate=False``."""
        tokens = self._tokens.encode(input, prepend_bos, padding_side, truncate=truncate)[0]
        return tokens.to(self._device()) if move_to_device else tokens

    def to_string(self, tokens: torch.Tensor | Sequence[int]) -> str | list[str]:
        """Tokens ``[pos]`` to a string, or ``[batch, pos]`` to a list of strings."""
        return self._tokens.decode(tokens)

    def to_str_tokens(
        self,
        input: str | list[str] | torch.Tensor | Sequence[int],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
    ) -> list[str] | list[list[str]]:
        """Each token as a string: a list for a text or tokens ``[pos]``/``[1, pos]``; a list of
        lists for a list of texts or tokens ``[batch > 1, pos]``."""
        return self._tokens.str_tokens(input, prepend_bos, padding_side)

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (raises otherwise)."""
        return self._tokens.single_token(string)

    def to_single_str_token(self, int_token: int) -> str:
        """The string of one token id."""
        if isinstance(int_token, torch.Tensor) and int_token.numel() == 1:
            int_token = int(int_token.item())
        if not isinstance(int_token, int):
            raise BadInputError(f"to_single_str_token takes one int token id, got {type(int_token).__name__}")
        return self._tokens.str_tokens(torch.tensor([int_token]))[0]

    def get_token_position(
        self,
        single_token: str | int | torch.Tensor,
        input: str | torch.Tensor,
        mode: Literal["first", "last"] = "first",
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
    ) -> int:
        """The position of ``single_token`` (a one-token string or an id) in a text or tokens ``[pos]``/``[1, pos]``."""
        if mode not in ("first", "last"):
            raise BadInputError(f"mode must be 'first' or 'last', got {mode!r}")
        tokens = self.to_tokens(input, prepend_bos, padding_side) if isinstance(input, str) else torch.as_tensor(input)
        if tokens.ndim == 2:
            if tokens.shape[0] != 1:
                shape = tuple(tokens.shape)
                raise BadInputError(f"get_token_position takes one sequence [pos] or [1, pos], got {shape}")
            tokens = tokens[0]
        token = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        positions = torch.nonzero(tokens == token)[:, 0]
        if positions.numel() == 0:
            raise BadInputError(f"token {token} ({self.to_single_str_token(token)!r}) does not occur in the input")
        return int(positions[0 if mode == "first" else -1])

    def loss_fn(
        self,
        logits: torch.Tensor,
        tokens: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        per_token: bool = False,
    ) -> torch.Tensor:
        """Next-token cross-entropy of ``logits`` ``[b, p, vocab]`` on ``tokens`` ``[b, p]``: the mean, or
        ``[b, p-1]`` with ``per_token``. Padded predictions (per the mask) are left out (0 per token)."""
        return lm_loss(logits, tokens, attention_mask, per_token=per_token)

    def input_to_embed(
        self,
        input: str | list[str] | torch.Tensor,
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        attention_mask: torch.Tensor | None = None,
        past_kv_cache: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor, None, torch.Tensor | None]:
        """``(residual, tokens, shortformer_pos_embed, attention_mask)``: the residual stream entering
        block 0 ``[b, p, d_model]`` (embeddings, position embeddings, any embedding scale), the tokens
        ``[b, p]``, ``None`` (no shortformer models here), and the mask (``None`` without padding).
        ``forward(residual, start_at_layer=0, tokens=tokens, attention_mask=mask)`` continues from it."""
        if past_kv_cache is not None:
            raise BadInputError("past_kv_cache takes TransformerLens's cache class, which bridge does not use.")
        tokens, attention_mask = self._tokens.prepare(
            input, attention_mask, prepend_bos, padding_side, self._d_vocab_in()
        )
        residual = self._run(tokens, attention_mask, None, False, 0, {})
        return residual, tokens.to(residual.device), None, attention_mask


class _Returning:
    """A skipped block's ``forward``: ignores its arguments and returns a fixed output."""

    def __init__(self, output: Any) -> None:
        self.output = output

    def __call__(self, *_args: Any, **_kwargs: Any) -> Any:
        return self.output


@functools.cache
def _own_parameters(method: Callable) -> tuple[str, ...]:
    """The named parameters of a method (not ``self``, ``*args``, ``**kwargs``)."""
    params = inspect.signature(method).parameters.values()
    return tuple(p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


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


__all__ = ["ConcurrentUseError", "HookedModel", "decoder_start_token_id", "lm_loss", "position_ids_for"]
