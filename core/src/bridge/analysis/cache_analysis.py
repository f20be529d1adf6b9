"""Residual-stream analysis on a cache: the logit lens, decompositions, head and neuron results, attributions.

Mixed into ``ActivationCache``; the methods follow TransformerLens's names, arguments and defaults. What a
block writes into the residual stream, and which norm reads it, comes from the block wirings' ``algebra``
(see ``bridge.residual``), so sequential, parallel and SSM blocks all work; where an analysis cannot hold
(per-head results under a post-attention norm, neurons of a mixture of experts) it says so.

Shapes: a *stack* is ``[components, *batch_and_pos, d_model]`` where ``batch_and_pos`` is ``[batch, pos]``,
``[pos]`` after ``remove_batch_dim``, and loses ``pos`` under an integer ``pos_slice``. ``layer`` means "the
residual stream entering block ``layer``", in ``[0, n_layers]``; ``n_layers`` (also ``None`` and ``-1``) is the
stream entering the unembedding, and other negative values count back from there.

Norms: ``apply_ln`` divides by the norm scale *cached in this run* (``blocks.{l}.ln1/ln2.hook_scale``,
``ln_final.hook_scale``), after centering for LayerNorm (RMS norms do not center). It never applies the norm's
weight or bias: as in TransformerLens, the result is exact for a model whose norm weights are folded into the
following weights; with unfolded weights it is "normalized, not scaled". The one exception, as in
TransformerLens 4: the logit lens (``accumulated_resid(apply_ln=True)`` up to the unembedding) runs the final
norm itself on each entry (its own statistics, weight and bias), so ``entry @ W_U + b_U`` is that entry's
logits and the last entry gives the model's logits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import einops
import torch

from bridge.analysis.model_weights import Tokens, residual_directions
from bridge.analysis.residual import AnalysisError, BlockLayout, block_layout
from bridge.kernel.slicing import Slice, SliceInput
from bridge.kernel.towers import TowerModule

if TYPE_CHECKING:
    from bridge.analysis.protocol import HookedModelLike

Method = TypeVar("Method", bound=Callable[..., Any])
_LN_KINDS = ("LN", "LNPre")
_NORM_KINDS = ("LN", "LNPre", "RMS", "RMSPre")
_WRITE_MODE = {"attn_out": "attn", "mlp_out": "mlp"}


class MissingActivationError(AnalysisError, KeyError):
    """An analysis needs an activation that was not cached; the message names it and the filter to use."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def _reads(*suffixes: str) -> Callable[[Method], Method]:
    """Declare the hook-name suffixes an analysis method may read; a missing activation's error then
    names the method the user called and a ``names_filter`` that caches all of them."""

    def decorate(method: Method) -> Method:
        @functools.wraps(method)
        def wrapper(self: CacheAnalysis, *args: Any, **kwargs: Any) -> Any:
            if self._running is not None:
                return method(self, *args, **kwargs)
            _refuse_stacks(self.model, method.__name__)
            self._running = (method.__name__, suffixes)
            try:
                return method(self, *args, **kwargs)
            finally:
                self._running = None

        return wrapper  # type: ignore[return-value]

    return decorate


def _refuse_stacks(model: Any, method: str) -> None:
    """Raise when ``model`` has no blocks of its own but several stacks (an encoder-decoder's ``encoder.`` and
    ``decoder.``): the residual analyses read the one stream ``blocks.{i}``."""
    if model is None or len(getattr(model, "blocks", ())):
        return
    stacks = [name for name, child in model.named_children() if isinstance(child, TowerModule)]
    if len(stacks) > 1:
        raise AnalysisError(
            f"{method} analyses one residual stream (the model's blocks.{{i}}), but {model.cfg.architecture} has "
            f"no blocks of its own: it is made of the stacks {stacks} (an encoder-decoder, whose decoder also reads "
            f"the encoder through cross-attention, or a two-tower model), each with its own stream. Read a stack's "
            f"activations by name instead, e.g. cache['{stacks[-1]}.blocks.0.hook_resid_post']."
        )


class CacheAnalysis:
    """The analysis methods of ``ActivationCache`` (which provides ``_acts``, ``model``, ``has_batch_dim``)."""

    _acts: dict[str, torch.Tensor]
    model: Any
    has_batch_dim: bool
    #: The outermost analysis method running and the hooks it may read (for missing-activation errors).
    _running: tuple[str, tuple[str, ...]] | None = None

    # ----------------------------------------------------------- residual stacks

    @_reads("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_normalized_resid_post", "hook_scale")
    def accumulated_resid(
        self,
        layer: int | None = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: Slice | SliceInput = None,
        mlp_input: bool = False,
        return_labels: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """The residual stream as it accumulates: ``resid_pre`` of each block up to ``layer`` (the logit lens).

        Returns ``[components, *batch_and_pos, d_model]``: ``{l}_pre`` for ``l < layer`` (and ``l == layer``),
        ``{l}_mid`` after each with ``incl_mid`` (blocks that have a ``resid_mid``), ``{layer}_mid`` with
        ``mlp_input``, and ``final_post`` (the last block's output: its ``resid_post``, or its
        ``normalized_resid_post`` after a post-norm) when ``layer == n_layers``. With
        ``apply_ln`` every entry is normalized by the cached scale of the norm reading the stream at ``layer``;
        at ``layer == n_layers`` (the logit lens) the final norm is run on each entry instead (its own
        statistics, weight and bias), so ``stack @ W_U + b_U`` gives each entry's logits.
        """
        positions = Slice.unwrap(pos_slice)
        n = self._n_layers()
        layer = self._stream_layer(layer)
        if mlp_input:
            self._check_mlp_input(layer)
        entries, labels = [], []
        for l in range(layer + 1):
            if l == n:  # what the last block hands on: hook_resid_post, or hook_normalized_resid_post (post-norm)
                output = getattr(self._model().blocks[n - 1], "output_hook", "hook_resid_post")
                entries.append(self._need(f"blocks.{n - 1}.{output}"))
                labels.append("final_post")
                continue
            entries.append(self._need(f"blocks.{l}.hook_resid_pre"))
            labels.append(f"{l}_pre")
            if ((incl_mid and l < layer) or (mlp_input and l == layer)) and self._layout(l).has_mid:
                entries.append(self._need(f"blocks.{l}.hook_resid_mid"))
                labels.append(f"{l}_mid")
        stack = torch.stack([positions.apply(entry, dim=-2) for entry in entries])
        if apply_ln:
            stack = self.apply_ln_to_stack(
                stack,
                layer,
                mlp_input=mlp_input,
                pos_slice=positions,
                has_batch_dim=self.has_batch_dim,
                recompute_ln=layer == n,
            )
        return (stack, labels) if return_labels else stack

    @_reads("hook_embed", "hook_pos_embed", "hook_attn_out", "hook_mlp_out", "hook_ssm_out", "hook_scale")
    def decompose_resid(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        mode: Literal["all", "mlp", "attn"] = "all",
        apply_ln: bool = False,
        pos_slice: Slice | SliceInput = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """The stream entering ``layer`` as a stack of what wrote it: ``[components, *batch_and_pos, d_model]``.

        ``embed``, ``pos_embed`` (if the model has them and ``incl_embeds``), then each block's writes
        (``{l}_attn_out``, ``{l}_mlp_out``; ``{l}_ssm_out`` for SSM blocks) for ``l < layer``, and with
        ``mlp_input`` the writes of block ``layer`` that its MLP already sees. Summed, they are the stream.
        ``mode`` keeps only attention (``"attn"``) or MLP (``"mlp"``) writes.
        """
        if mode not in ("all", "mlp", "attn"):
            raise AnalysisError(f"mode must be 'all', 'mlp' or 'attn', got {mode!r}")
        positions = Slice.unwrap(pos_slice)
        layer = self._stream_layer(layer)
        if mlp_input:
            self._check_mlp_input(layer)
        entries, labels = [], []
        if incl_embeds:
            for name in self._embedding_hooks():
                entries.append(self._need(name))
                labels.append(name.removeprefix("hook_"))
        for l in range(min(layer + 1, self._n_layers())):
            layout = self._layout(l)
            writes = layout.writes if l < layer else (layout.mid_writes if mlp_input else ())
            for write in writes:
                kind = _WRITE_MODE.get(write)
                if mode != "all" and kind is None:
                    raise AnalysisError(
                        f"block {l} writes {write!r}, which is neither attention nor MLP output; use mode='all'"
                    )
                if mode != "all" and kind != mode:
                    continue
                entries.append(self._need(f"blocks.{l}.{layout.write_hooks[write]}"))
                labels.append(f"{l}_{write}")
        if not entries:
            raise AnalysisError(
                f"decompose_resid(layer={layer}, mode={mode!r}, incl_embeds={incl_embeds}) selects no components"
            )
        stack = torch.stack([positions.apply(entry, dim=-2) for entry in entries])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=positions)
        return (stack, labels) if return_labels else stack

    # ------------------------------------------------------------------ heads

    @_reads("attn.hook_z")
    def compute_head_results(self) -> None:
        """Cache each head's output ``blocks.{l}.attn.hook_result`` ``[*batch_and_pos, n_heads, d_model]``.

        ``result[..., h, :] = z[..., h, :] @ W_O[h]`` from the cached ``hook_z`` and
        ``model.blocks[l].attn.W_O`` ``[n_heads, d_head, d_model]``; summed over heads, plus ``b_O``, they
        are the attention output. Layers whose result is already cached are left as they are. In a hybrid
        (``cfg.layer_types``) only its attention layers have heads.
        """
        model = self._model()
        layers = self._attention_layers(self._n_layers(), "compute_head_results")
        missing = [l for l in layers if f"blocks.{l}.attn.hook_result" not in self._acts]
        for l in missing:
            attn = dict(model.blocks[l].named_children()).get("attn")
            if attn is None or not getattr(attn, "z_feeds_out_proj", True):
                raise AnalysisError(f"compute_head_results: {self._layout(l).why_not['attn']}")
        self._compute_head_results_for(missing)

    @_reads("attn.hook_z", "hook_resid_pre", "hook_resid_post", "hook_scale")
    def stack_head_results(
        self,
        layer: int = -1,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: Slice | SliceInput = None,
        apply_ln: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """Every head's output for blocks before ``layer``: ``[layer·n_heads (+1), *batch_and_pos, d_model]``.

        Labels ``L{l}H{h}``; ``incl_remainder`` adds ``remainder``, the rest of the stream entering ``layer``
        (embeddings, biases, MLPs…), so that the stack sums to it. In a hybrid (``cfg.layer_types``) the heads
        are those of its attention layers (the other layers' writes are in the remainder). Where an output gate
        sits between ``hook_z`` and the output projection, the per-head results must be cached
        (``set_use_attn_result(True)``): ``z @ W_O`` is not what the layer wrote.
        """
        positions = Slice.unwrap(pos_slice)
        layer = self._stream_layer(layer)
        layers = self._attention_layers(layer, "stack_head_results")
        missing = [l for l in layers if f"blocks.{l}.attn.hook_result" not in self._acts]
        for l in layers:
            cached = l not in missing and self._layout(l).results_write
            if not cached:
                self._require_writes(l, "attn", "stack_head_results")
        self._compute_head_results_for(missing)
        n_heads = self._model().cfg.n_heads
        labels = [f"L{l}H{h}" for l in layers for h in range(n_heads)]
        parts = [positions.apply(self._acts[f"blocks.{l}.attn.hook_result"], dim=-3) for l in layers]
        stack = self._concat_parts(parts, positions)
        if incl_remainder:
            stack = self._with_remainder(stack, layer, positions)
            labels.append("remainder")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=positions)
        return (stack, labels) if return_labels else stack

    # ---------------------------------------------------------------- neurons

    @_reads("mlp.hook_post")
    def get_neuron_results(
        self,
        layer: int,
        neuron_slice: Slice | SliceInput = None,
        pos_slice: Slice | SliceInput = None,
    ) -> torch.Tensor:
        """Each neuron's output in block ``layer``: ``post[..., n] * W_out[n]``, ``[*batch_and_pos, neurons, d_model]``.

        Summed over all neurons, plus ``b_out``, they are the MLP output. Not cached (cheap to recompute).
        """
        layer = self._block_index(layer)
        self._require_writes(layer, "mlp", "get_neuron_results")
        post = self._need(f"blocks.{layer}.mlp.hook_post")
        W_out = self._model().blocks[layer].mlp.W_out.to(post.device, post.dtype)  # [d_mlp, d_model]
        neurons = Slice.unwrap(neuron_slice)
        post = Slice.unwrap(pos_slice).apply(post, dim=-2)
        post, W_out = neurons.apply(post, dim=-1), neurons.apply(W_out, dim=0)
        return post[..., None] * W_out

    @_reads("mlp.hook_post", "hook_resid_pre", "hook_resid_post", "hook_scale")
    def stack_neuron_results(
        self,
        layer: int,
        pos_slice: Slice | SliceInput = None,
        neuron_slice: Slice | SliceInput = None,
        return_labels: bool = False,
        incl_remainder: bool = False,
        apply_ln: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """Every neuron's output for blocks before ``layer``: ``[layer·neurons (+1), *batch_and_pos, d_model]``.

        Labels ``L{l}N{n}``; ``incl_remainder`` adds the rest of the stream entering ``layer``. Memory grows
        as ``d_mlp × d_model`` per position: slice positions or neurons on real models.
        """
        positions, neurons = Slice.unwrap(pos_slice), Slice.unwrap(neuron_slice)
        layer = self._stream_layer(layer)
        d_mlp = self._model().cfg.d_mlp
        kept = neurons.apply(torch.arange(d_mlp or 0), dim=0).reshape(-1).tolist()
        labels = [f"L{l}N{n}" for l in range(layer) for n in kept]
        parts = []
        for l in range(layer):
            part = self.get_neuron_results(l, neuron_slice=neurons, pos_slice=positions)
            parts.append(part if neurons.mode != "int" else part[..., None, :])
        stack = self._concat_parts(parts, positions)
        if incl_remainder:
            stack = self._with_remainder(stack, layer, positions)
            labels.append("remainder")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=positions)
        return (stack, labels) if return_labels else stack

    # ------------------------------------------------------------ full decomposition

    @_reads("hook_embed", "hook_pos_embed", "attn.hook_z", "mlp.hook_post", "hook_mlp_out", "hook_scale")
    def get_full_resid_decomposition(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        expand_neurons: bool = True,
        apply_ln: bool = False,
        pos_slice: Slice | SliceInput = None,
        return_labels: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """The stream entering ``layer`` split into every head, every neuron (or MLP), embeddings and biases.

        ``[components, *batch_and_pos, d_model]``, in the order: heads ``L{l}H{h}``; neurons ``L{l}N{n}``
        (or ``{l}_mlp_out`` without ``expand_neurons``); ``embed``; ``pos_embed``; ``bias`` (every ``b_O``, and
        every ``b_out`` when neurons are expanded). Summed, they are the stream, exactly.
        """
        positions = Slice.unwrap(pos_slice)
        layer = self._stream_layer(layer)
        if mlp_input:
            self._check_mlp_input(layer)
        heads_to = layer + 1 if mlp_input and self._layout(layer).has_mid else layer
        stack, labels = self.stack_head_results(heads_to, pos_slice=positions, return_labels=True)
        parts = [stack]
        if layer > 0 and not getattr(self._model().cfg, "attn_only", False):
            if expand_neurons:
                neurons, neuron_labels = self.stack_neuron_results(layer, pos_slice=positions, return_labels=True)
            else:
                neurons, neuron_labels = self.decompose_resid(
                    layer, mode="mlp", pos_slice=positions, incl_embeds=False, return_labels=True
                )
            parts.append(neurons)
            labels.extend(neuron_labels)
        for name in self._embedding_hooks():
            parts.append(positions.apply(self._need(name), dim=-2)[None])
            labels.append(name.removeprefix("hook_"))
        bias = self._accumulated_bias(heads_to, layer if expand_neurons else 0)
        parts.append(bias.to(stack.device, stack.dtype).expand(1, *stack.shape[1:]))
        labels.append("bias")
        stack = torch.cat(parts)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=positions)
        return (stack, labels) if return_labels else stack

    # ---------------------------------------------------------- norms and logits

    @_reads("hook_scale")
    def apply_ln_to_stack(
        self,
        residual_stack: torch.Tensor,
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: Slice | SliceInput = None,
        batch_slice: Slice | SliceInput = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
    ) -> torch.Tensor:
        """Normalize a stack ``[components, *batch_and_pos, d_model]`` as the norm reading ``layer`` saw it.

        Divides by that norm's cached ``hook_scale`` (``ln1``, or ``ln2`` with ``mlp_input``; ``ln_final`` for
        ``layer == n_layers``), after centering each component if it is a LayerNorm. The norm's weight and
        bias are NOT applied (exact for folded norms). ``pos_slice``/``batch_slice``: the selection already
        applied to the stack, applied here to the scale (``batch_slice`` also to the stack's dim 1 when
        ``has_batch_dim``). A point with no norm in front (e.g. OLMo-2's blocks) returns the stack unchanged.
        ``recompute_ln`` at ``layer == n_layers`` runs the final norm module on each component instead (its
        own statistics, weight and bias: the logit lens), needing no cached scale.
        """
        positions, batches = Slice.unwrap(pos_slice), Slice.unwrap(batch_slice)
        layer = self._stream_layer(layer)
        if has_batch_dim:
            residual_stack = batches.apply(residual_stack, dim=1)
        norm_name = self._norm_at(layer, mlp_input)
        if norm_name is None:
            return residual_stack
        norm = self._model().get_submodule(norm_name)
        if recompute_ln and layer == self._n_layers():
            return norm.hf(residual_stack)  # per position and component: the norm acts on the last dim only
        kind = getattr(norm, "kind", None) or self._model().cfg.normalization_type
        if kind not in _NORM_KINDS:
            return residual_stack
        if kind in _LN_KINDS:
            residual_stack = residual_stack - residual_stack.mean(dim=-1, keepdim=True)
        scale = positions.apply(self._need(f"{norm_name}.hook_scale"), dim=-2)
        if self.has_batch_dim:
            scale = batches.apply(scale, dim=0)
        return residual_stack / scale.to(residual_stack.device)

    @_reads("ln_final.hook_scale")
    def logit_attrs(
        self,
        residual_stack: torch.Tensor,
        tokens: Tokens,
        incorrect_tokens: Tokens | None = None,
        pos_slice: Slice | SliceInput = None,
        batch_slice: Slice | SliceInput = None,
        has_batch_dim: bool = True,
    ) -> torch.Tensor:
        """Each component's direct contribution to the logit of ``tokens`` (minus ``incorrect_tokens``).

        ``residual_stack`` ``[components, *batch_and_pos, d_model]`` is normalized with the final norm's cached
        scale (``apply_ln_to_stack``) and dotted with ``W_U[:, token]``; returns ``[components, *batch_and_pos]``.
        ``tokens``: one token, one per batch item ``[batch]`` (used at every position), or ``[batch, pos]``.
        On a model with the final norm folded into ``W_U``, the attributions of a full decomposition sum to
        the logit (difference) minus ``b_U``.
        """
        model = self._model()
        directions = residual_directions(model, tokens)
        if incorrect_tokens is not None:
            if _token_shape(tokens) != _token_shape(incorrect_tokens):
                raise AnalysisError(
                    f"tokens and incorrect_tokens must have the same shape, got {_token_shape(tokens)} and "
                    f"{_token_shape(incorrect_tokens)}"
                )
            directions = directions - residual_directions(model, incorrect_tokens)
        batches = Slice.unwrap(batch_slice)
        scaled = self.apply_ln_to_stack(
            residual_stack, None, pos_slice=pos_slice, batch_slice=batches, has_batch_dim=has_batch_dim
        )
        per_example = directions.ndim == 2 and scaled.ndim == 4 and directions.shape[0] == scaled.shape[1]
        if has_batch_dim and batches.mode != "int" and per_example:
            directions = directions[:, None]  # one token per batch item [b, d]: the same at every position
        return (scaled * directions.to(scaled.device, scaled.dtype)).sum(dim=-1)

    # ------------------------------------------------------------------- misc

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: str | None = None) -> torch.Tensor:
        """One activation of every block before ``layer`` (default: all), stacked: ``[layers, ...]``."""
        layer = self._stream_layer(layer)
        return torch.stack([self[(activation_name, l, sublayer_type)] for l in range(layer)])  # type: ignore[index]

    # -------------------------------------------------------------- internals

    def _model(self) -> HookedModelLike:
        if self.model is None:
            raise AnalysisError(
                "this cache has no model, and the analysis needs its structure and weights; caches from "
                "model.run_with_cache have one (or build ActivationCache(activations, model=model))"
            )
        return self.model

    def _n_layers(self) -> int:
        return self._model().cfg.n_layers

    def _layout(self, layer: int) -> BlockLayout:
        return block_layout(self._model().blocks[layer], layer)

    def _stream_layer(self, layer: int | None) -> int:
        """A stream index in ``[0, n_layers]``: ``None`` is ``n_layers``, negatives count back from it."""
        n = self._n_layers()
        if layer is None:
            return n
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise AnalysisError(f"layer must be an int or None, got {layer!r}")
        resolved = layer + n + 1 if layer < 0 else layer
        if not 0 <= resolved <= n:
            raise AnalysisError(
                f"layer {layer} is out of range: the residual stream is indexed by 0..{n} "
                f"({n} = entering the unembedding; -1 is {n}, down to {-(n + 1)})"
            )
        return resolved

    def _block_index(self, layer: int) -> int:
        n = self._n_layers()
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise AnalysisError(f"block index {layer!r} is out of range: this model has {n} blocks ({-n}..{n - 1})")
        return layer % n

    def _check_mlp_input(self, layer: int) -> None:
        n = self._n_layers()
        if layer == n:
            raise AnalysisError(f"mlp_input=True needs a block index (layer < {n}); layer {n} is the unembedding")
        if "mlp" not in dict(self._model().blocks[layer].named_children()):
            raise AnalysisError(f"mlp_input=True: {self._layout(layer).why_not['mlp']}")

    def _attention_layers(self, layer: int, method: str) -> list[int]:
        """The blocks before ``layer`` whose heads are stacked: all of them, or a hybrid's attention layers."""
        model = self._model()
        if model.cfg.layer_types is None:
            return list(range(layer))
        layers = [l for l in range(layer) if "attn" in dict(model.blocks[l].named_children())]
        if not layers and layer:
            raise AnalysisError(f"{method}: blocks 0..{layer - 1} of this hybrid have no attention layer")
        return layers

    def _require_writes(self, layer: int, sublayer: str, method: str) -> None:
        layout = self._layout(layer)
        if not (layout.heads_write if sublayer == "attn" else layout.neurons_write):
            raise AnalysisError(f"{method}: {layout.why_not[sublayer]}")

    def _compute_head_results_for(self, layers: list[int]) -> None:
        model = self._model()
        for l in layers:
            z = self._need(f"blocks.{l}.attn.hook_z")
            W_O = model.blocks[l].attn.W_O.to(z.device, z.dtype)  # [n_heads, d_head, d_model]
            self._acts[f"blocks.{l}.attn.hook_result"] = torch.einsum("...hd,hdm->...hm", z, W_O).detach()

    def _norm_at(self, layer: int, mlp_input: bool) -> str | None:
        """The module name of the norm reading the stream at ``layer`` (attention side, or MLP side)."""
        if layer == self._n_layers():
            if mlp_input:
                raise AnalysisError("mlp_input=True needs a block index; the final norm reads the whole stream")
            return "ln_final" if self._model().ln_final is not None else None
        layout = self._layout(layer)
        norm = layout.mlp_norm if mlp_input else layout.attn_norm
        return f"blocks.{layer}.{norm}" if norm is not None else None

    def _embedding_hooks(self) -> list[str]:
        model = self._model()
        return [name for name in ("hook_embed", "hook_pos_embed") if getattr(model, name, None) is not None]

    def _concat_parts(self, parts: list[torch.Tensor], positions: Slice) -> torch.Tensor:
        """Per-layer ``[*batch_and_pos, k, d_model]`` parts → ``[Σk, *batch_and_pos, d_model]``."""
        if not parts:
            return self._empty_stack(positions)
        joined = torch.cat(parts, dim=-2)
        return einops.rearrange(joined, "... k d_model -> k ... d_model")

    def _empty_stack(self, positions: Slice) -> torch.Tensor:
        """``[0, *batch_and_pos, d_model]``, shaped like this cache's residual-stream activations."""
        suffixes = ("hook_resid_pre", "hook_resid_post", "hook_embed", "hook_attn_out", "hook_mlp_out")
        for name, tensor in self._acts.items():
            if name.endswith(suffixes):
                return positions.apply(tensor, dim=-2).new_zeros(0, *positions.apply(tensor, dim=-2).shape)
        for name, tensor in self._acts.items():
            if name.endswith("hook_z"):
                sliced = positions.apply(tensor, dim=-3)  # [*batch_and_pos, h, d_head]
                return sliced.new_zeros(0, *sliced.shape[:-2], self._model().cfg.d_model)
        raise AnalysisError("cannot tell the batch and position shape: cache a residual hook such as hook_embed")

    def _with_remainder(self, stack: torch.Tensor, layer: int, positions: Slice) -> torch.Tensor:
        """Append the stream entering ``layer`` minus the stack's sum: ``[components + 1, ...]``."""
        name = f"blocks.{layer - 1}.hook_resid_post" if layer > 0 else "blocks.0.hook_resid_pre"
        stream = positions.apply(self._need(name), dim=-2)
        remainder = stream - stack.sum(dim=0) if stack.shape[0] else stream
        return torch.cat([stack, remainder[None].to(stack.dtype)]) if stack.shape[0] else remainder[None]

    def _accumulated_bias(self, attn_layers: int, mlp_layers: int) -> torch.Tensor:
        """``Σ b_O`` over blocks ``< attn_layers`` plus ``Σ b_out`` over blocks ``< mlp_layers``: ``[d_model]``."""
        model = self._model()
        bias = torch.zeros(model.cfg.d_model)
        for l in range(attn_layers):
            bias = bias + model.blocks[l].attn.b_O.detach().float().cpu()
        for l in range(mlp_layers):
            bias = bias + model.blocks[l].mlp.b_out.detach().float().cpu()
        return bias

    def _need(self, name: str) -> torch.Tensor:
        """The cached activation ``name``, or an error naming it and a ``names_filter`` that caches it."""
        try:
            return self._acts[name]
        except KeyError:
            pass
        method, suffixes = self._running or ("this analysis", ())
        tail = name.rsplit(".", 1)[-1]
        if not any(name.endswith(s) for s in suffixes):
            suffixes = (*suffixes, tail)
        raise MissingActivationError(
            f"{method} needs {name!r}, which is not in this cache. Run the model with "
            f"run_with_cache(..., names_filter=lambda name: name.endswith({suffixes!r})) "
            "(or no names_filter, to cache everything)."
        )


def _token_shape(tokens: Tokens) -> tuple[int, ...]:
    if isinstance(tokens, str | int):
        return ()
    shape = tuple(torch.as_tensor(tokens).shape)
    return () if shape == (1,) or not shape else shape
