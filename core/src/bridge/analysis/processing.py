"""Opt-in weight processing, done in place on the HF parameters (TransformerLens's ``process_weights``).

Each step keeps the model's log-probabilities; what changes is where things are written down:

- ``fold_layer_norm``: each pre-norm's weight (and bias) moves into the weights that read its output
  (q/k/v or a fused qkv, MLA's q/kv down-projections, MLP in/gate, MoE routers and every expert,
  the unembedding); the norm is left with weight 1 (Gemma: 0, as it scales by ``1 + w``) and bias 0.
  For LayerNorm the reading weights are also centred over their input (their input is mean-zero).
  Post-norms (OLMo-2, Gemma's sandwich norms) write into the residual stream and are left as they are.
- ``center_writing_weights`` (LayerNorm models): every weight writing to the residual stream (token and
  position embeddings, attention and MLP output projections) loses its mean over ``d_model``.
- ``center_unembed``: the unembedding loses its mean over the vocabulary (logits shift per position).
- ``fold_value_biases``: ``b_O += Σ_h b_V[h] @ W_O[h]`` and ``b_V = 0`` (attention patterns sum to 1; refused
  with attention sinks, whose patterns do not).
- ``refactor_factored_attn_matrices`` (off unless asked): each head's ``QK`` and ``OV`` factors rewritten into an
  SVD-even form (``bridge.analysis.refactor_attention``).

A step that cannot be done exactly raises ``WeightProcessingError`` before anything is changed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import einops
import numpy as np
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from bridge.analysis import refactor_attention
from bridge.analysis.norm_readers import Reader, WeightProcessingError, find_readers
from bridge.analysis.value_biases import ValueBias, find_value_bias
from bridge.kernel.components.attention import weight_in_out
from bridge.kernel.components.base import InputTap
from bridge.kernel.components.norm import Norm

if TYPE_CHECKING:
    from bridge.analysis.protocol import HookedModelLike

__all__ = ["UntiedEmbeddingsWarning", "WeightProcessing", "WeightProcessingError"]

STEPS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases", "refactor_factored_attn_matrices")


class UntiedEmbeddingsWarning(UserWarning):
    """The unembedding shared its weight with the token embedding and was given its own copy."""


class WeightProcessing:
    """Mixed into ``Bridge``: ``process_weights`` and its parts."""

    def process_weights(
        self: HookedModelLike,
        fold_ln: bool | None = None,
        center_writing_weights: bool | None = None,
        center_unembed: bool | None = None,
        fold_value_biases: bool | None = None,
        refactor_factored_attn_matrices: bool | None = False,
    ) -> HookedModelLike:
        """Process the weights in place, keeping the model's log-probabilities.

        Each flag: ``True`` does the step or raises ``WeightProcessingError`` saying why it cannot be
        done here; ``False`` skips it; ``None`` (the default, except for ``refactor_factored_attn_matrices``,
        which is off unless asked, as in TransformerLens) does it if it applies to this kind of
        model (``process_weights()`` on a RMSNorm model folds norms but does not centre the residual
        stream), still raising if it applies but cannot be done exactly. Nothing changes before every
        chosen step is known to be possible. Returns the bridge.
        """
        flags = (fold_ln, center_writing_weights, center_unembed, fold_value_biases, refactor_factored_attn_matrices)
        asked = dict(zip(STEPS, flags, strict=True))
        if any(wanted is not False for wanted in asked.values()):
            _require_one_stack(self)
            _require_weights_in_memory(self)
        chosen = []
        for step, wanted in asked.items():
            reason = _why_not(self, step) if wanted is not False else None
            if wanted and reason:
                raise WeightProcessingError(f"{step}=True is not possible on {self.cfg.architecture}: {reason}")
            if wanted or (wanted is None and reason is None):
                chosen.append(step)
        _require_no_hooks(self)
        run = _probe_run(self)
        readers = _plan_fold(self, run) if "fold_ln" in chosen else {}
        value_biases = _plan_value_biases(self, run) if "fold_value_biases" in chosen else {}
        with torch.no_grad():
            if "fold_ln" in chosen:
                _fold(self, readers)
            if "center_writing_weights" in chosen:
                _center_writers(self)
            if "center_unembed" in chosen:
                _center_unembed(self)
            if "fold_value_biases" in chosen:
                _fold_value_biases(self, value_biases)
            if "refactor_factored_attn_matrices" in chosen:
                refactor_attention.refactor_factored_attn_matrices(self, run)
        done = self.cfg.extra.setdefault("weight_processing", [])
        done.extend(step for step in chosen if step not in done)
        return self

    def fold_layer_norm(self: HookedModelLike) -> HookedModelLike:
        """Fold every pre-norm's weight and bias into the weights reading its output (see the module doc)."""
        return self.process_weights(True, False, False, False)

    def center_writing_weights(self: HookedModelLike) -> HookedModelLike:
        """Remove the mean over ``d_model`` from every weight and bias writing to the residual stream."""
        return self.process_weights(False, True, False, False)

    def center_unembed(self: HookedModelLike) -> HookedModelLike:
        """Remove the mean over the vocabulary from ``W_U`` ``[d_model, d_vocab]`` and ``b_U``."""
        return self.process_weights(False, False, True, False)

    def fold_value_biases(self: HookedModelLike) -> HookedModelLike:
        """Move every layer's value bias into its output bias: ``b_O += Σ_h b_V[h] @ W_O[h]``, ``b_V = 0``."""
        return self.process_weights(False, False, False, True)


# ----------------------------------------------------------------- what applies


def _why_not(bridge: HookedModelLike, step: str) -> str | None:
    """Why ``step`` cannot be done exactly on this model, or ``None`` when it can."""
    has_attention = all(hasattr(block, "attn") for block in bridge.blocks)
    hybrid = bridge.cfg.layer_types is not None  # its ln1/ln2 are folded into whatever reads them, traced
    if step == "fold_ln" and not has_attention and not hybrid:
        return (
            "its blocks are not attention blocks (state-space mixers); bridge processes the weights of "
            "attention transformers and hybrids only"
        )
    if step == "fold_value_biases" and not has_attention:
        return (
            "some of its blocks have no attention (state-space or linear-attention layers), and value biases are "
            "folded through attention patterns only"
        )
    if step == "fold_value_biases" and any(hasattr(block.attn, "hook_sink_logits") for block in bridge.blocks):
        return (
            "its attention has sinks, so a pattern row sums to less than 1 and the value bias it passes on "
            "varies with the position; it cannot move into the constant output bias"
        )
    if step == "center_writing_weights":
        return _why_not_center_writers(bridge)
    if step == "refactor_factored_attn_matrices":
        return refactor_attention.why_not(bridge)
    if step == "center_unembed":
        if bridge.unembed is None:
            return "the model has no unembedding"
        softcap = bridge.cfg.extra.get("final_logit_softcapping") or getattr(
            bridge.hf_model.config, "final_logit_softcapping", None
        )
        if softcap:
            return "its logits are soft-capped (tanh), which is not shift-invariant, so centring W_U changes log-probs"
    return None


def _why_not_center_writers(bridge: HookedModelLike) -> str | None:
    kinds = {norm.kind for norm in bridge.components() if isinstance(norm, Norm)}
    if kinds != {"LN"}:
        return (
            "it uses RMSNorm, which does not subtract the mean, so removing the residual stream's mean "
            "changes every norm's output; centring is for LayerNorm models"
        )
    if getattr(bridge, "embed", None) is None:
        return (
            "its residual stream does not start from a token embedding (an image encoder's patch embeddings or "
            "pre-norm write it), so what writes it first cannot be centred by changing embedding weights"
        )
    for name in ("embed", "pos_embed"):
        embedding = getattr(bridge, name, None)
        if embedding is not None and not isinstance(embedding.hf, nn.Embedding):
            return (
                f"its {name} output comes from {type(embedding.hf).__name__}, not an embedding matrix, so "
                "what it writes to the residual stream cannot be centred by changing weights"
            )
    for i, block in enumerate(bridge.blocks):
        if _writers(block) is None:
            return f"block {i} does not show its attention and MLP output projections"
    return None


def _writers(block: nn.Module) -> list[nn.Module] | None:
    """The HF modules of a block that write to the residual stream: attention and MLP output projections."""
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    out_proj = getattr(attn, "out_proj", None)
    hook_post = getattr(mlp, "hook_post", None)
    mlp_out = next(
        (a.module for a in getattr(mlp, "_attachments", []) if isinstance(a, InputTap) and hook_post in a.hooks),
        None,
    )
    writers = [out_proj, mlp_out]
    if any(not isinstance(w, nn.Linear | Conv1D) for w in writers):
        return None
    return writers


def _require_one_stack(bridge: HookedModelLike) -> None:
    """Refuse a model made of towers (two-tower image-text models): processing works on one stack of blocks."""
    if len(bridge.blocks):
        return
    towers = [name for name, child in bridge.named_children() if hasattr(child, "blocks") and len(child.blocks)]
    raise WeightProcessingError(
        f"this {bridge.cfg.architecture} is made of towers ({', '.join(towers)}), each with its own blocks and "
        "norms; bridge processes the weights of one stack of blocks only. To process a tower, load one tower "
        "on its own (e.g. CLIPVisionModel / CLIPTextModel). Nothing was changed."
    )


def _require_weights_in_memory(bridge: HookedModelLike) -> None:
    """Refuse a model whose weights accelerate offloaded: they sit on the ``meta`` device between calls (their
    values on disk or in CPU RAM, read in per call), so processing in place could neither read nor write them."""
    offloaded = [name for name, param in bridge.hf_model.named_parameters() if param.device.type == "meta"]
    if offloaded:
        raise WeightProcessingError(
            f"{len(offloaded)} parameters of this {bridge.cfg.architecture} are offloaded by accelerate (e.g. "
            f"{offloaded[0]!r}: on the meta device between calls, its values on disk or in CPU RAM), and weight "
            "processing changes weights in place, so it cannot be done here; nothing was changed. Load the model "
            "without offload (no offload_folder, a device_map that keeps every module on a device) to process it."
        )


def _require_no_hooks(bridge: HookedModelLike) -> None:
    active = [name for name, point in bridge.hook_dict.items() if point.active]
    if active:
        raise WeightProcessingError(
            f"hooks are attached ({active[:3]}…): processing runs the model to find its weights; "
            "remove them first with model.reset_hooks(including_permanent=True)"
        )


def _probe_run(bridge: HookedModelLike) -> Callable[[], Any]:
    """A forward pass of the HF model on a few tokens, or for a model that reads images only, on one blank
    image (processing inspects the model with it)."""
    device = next(bridge.hf_model.parameters()).device
    if "text" in bridge.adapter.modalities:
        tokens = torch.arange(1, 5, device=device)[None] % bridge.cfg.d_vocab  # [1, 4]
        return lambda: bridge.hf_model(input_ids=tokens, use_cache=False)
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in _blank_image(bridge).items()}
    return lambda: bridge.hf_model(**inputs)


def _blank_image(bridge: HookedModelLike) -> dict[str, Any]:
    """HF inputs for one blank image: through the model's image processor (any input layout), else pixel values
    ``[1, channels, size, size]`` from the config."""
    config = bridge.hf_model.config
    vision = getattr(config, "vision_config", None) or config
    size, channels = getattr(vision, "image_size", None), getattr(vision, "num_channels", 3)
    processor = getattr(bridge, "image_processor", None)
    if processor is not None:
        side = size if isinstance(size, int) else 32
        return dict(processor(images=[np.zeros((side, side, 3), dtype=np.uint8)], return_tensors="pt"))
    if isinstance(size, int):
        return {"pixel_values": torch.zeros(1, channels, size, size, dtype=next(bridge.hf_model.parameters()).dtype)}
    raise WeightProcessingError(
        f"weight processing runs the model once to find the weights reading each norm, and this "
        f"{bridge.cfg.architecture} has neither an image processor nor an image_size in its config to build an "
        "input from; wrap it with its image processor (`bridge.wrap(hf_model, image_processor=...)`)."
    )


# ------------------------------------------------------------------- fold_ln


def _pre_norms(bridge: HookedModelLike) -> dict[str, Norm]:
    """The norms whose output only weights read: blocks' ``ln1``/``ln2`` and ``ln_final`` (with a head)."""
    norms = {}
    for i, block in enumerate(bridge.blocks):
        for role in ("ln1", "ln2"):
            norm = getattr(block, role, None)
            if isinstance(norm, Norm):
                norms[f"blocks.{i}.{role}"] = norm
    if isinstance(bridge.ln_final, Norm) and bridge.unembed is not None:
        norms["ln_final"] = bridge.ln_final
    return norms


def _plan_fold(bridge: HookedModelLike, run: Callable[[], Any]) -> dict[str, tuple[Norm, list[Reader]]]:
    norms = _pre_norms(bridge)
    found = find_readers(bridge.hf_model, {name: norm.hf for name, norm in norms.items()}, bridge.cfg.d_model, run)
    owner: dict[int, str] = {}
    for name, readers in found.items():
        bias = getattr(norms[name].hf, "bias", None)
        for reader in readers:
            other = owner.setdefault(id(reader.parameter), name)
            if other != name:
                raise WeightProcessingError(f"cannot fold: {reader.path} reads the outputs of both {other} and {name}")
            if bias is not None and bool(bias.any()) and reader.bias is None:
                raise WeightProcessingError(
                    f"cannot fold {name}'s bias into {reader.path} ({type(reader.module).__name__}), which has "
                    "no bias to take it. Process without fold_ln."
                )
    return {name: (norms[name], readers) for name, readers in found.items()}


def _fold(bridge: HookedModelLike, plan: dict[str, tuple[Norm, list[Reader]]]) -> None:
    for norm, readers in plan.values():
        weight, bias = getattr(norm.hf, "weight", None), getattr(norm.hf, "bias", None)
        scale = None if weight is None else weight.detach().float() + norm.weight_offset  # [d_model]
        shift = None if bias is None else bias.detach().float()  # [d_model]
        for reader in readers:
            param = _own_parameter(bridge, reader.module, reader.weight)
            folded = param.detach().float()
            if shift is not None and bool(shift.any()):
                _add_to_bias(reader, torch.tensordot(folded, shift, dims=([reader.axis], [0])))  # output dims
            if scale is not None:
                shape = [1] * folded.ndim
                shape[reader.axis] = -1
                folded = folded * scale.reshape(shape)
            if norm.kind == "LN":  # the folded norm's output is mean-zero: the weight's mean over d_model reads 0
                folded = folded - folded.mean(reader.axis, keepdim=True)
            param.copy_(folded)
        if weight is not None:
            weight.fill_(1.0 - norm.weight_offset)
        if bias is not None:
            bias.zero_()


def _add_to_bias(reader: Reader, delta: torch.Tensor) -> None:
    bias = getattr(reader.module, reader.bias)
    if bias is None:
        weight = reader.parameter
        setattr(reader.module, reader.bias, nn.Parameter(delta.to(weight.dtype), requires_grad=weight.requires_grad))
    else:
        bias.add_(delta.to(bias.dtype))


def _own_parameter(bridge: HookedModelLike, module: nn.Module, name: str) -> nn.Parameter:
    """``module``'s parameter ``name``, first given its own copy if another module shares it (tied embeddings).

    Processing the unembedding must not change the token embedding, so a tied ``lm_head`` is untied,
    the config says so (``tie_word_embeddings=False``, so saving and reloading keeps them apart) and an
    ``UntiedEmbeddingsWarning`` is issued.
    """
    param = getattr(module, name)
    sharers = [
        m for m in bridge.hf_model.modules() if m is not module and any(p is param for p in m._parameters.values())
    ]
    if not sharers:
        return param
    own = nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad)
    setattr(module, name, own)
    hf = bridge.hf_model
    for config in (hf.config, hf.config.get_text_config()):
        if getattr(config, "tie_word_embeddings", False):
            config.tie_word_embeddings = False
    if hasattr(hf, "all_tied_weights_keys"):
        hf.all_tied_weights_keys = hf.get_expanded_tied_weights_keys(all_submodels=True)
    warnings.warn(
        f"bridge: {type(module).__name__}.{name} was shared with {type(sharers[0]).__name__} (tied embeddings); "
        "weight processing gave it its own copy so that the embedding stays unchanged (W_U is no longer W_E.T)",
        UntiedEmbeddingsWarning,
        stacklevel=4,
    )
    return own


def _shares_weight(module: nn.Module, other: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return weight is not None and any(p is weight for p in other.parameters(recurse=False))


# ---------------------------------------------------------------- centering


def _center_output(module: nn.Module) -> None:
    """Remove the mean over ``d_model`` from what ``module`` writes (weight rows/columns and bias)."""
    axis = 0 if isinstance(module, nn.Linear) else 1  # Linear [d_model, d_in]; Conv1D, Embedding [·, d_model]
    weight = module.weight
    weight.sub_(weight.mean(axis, keepdim=True))
    bias = getattr(module, "bias", None)
    if bias is not None:
        bias.sub_(bias.mean())


def _center_writers(bridge: HookedModelLike) -> None:
    embed = getattr(bridge, "embed", None)
    if bridge.unembed is not None and embed is not None and _shares_weight(bridge.unembed.hf, embed.hf):
        _own_parameter(bridge, bridge.unembed.hf, "weight")  # tied: W_U must not move with W_E
    for name in ("embed", "pos_embed"):
        embedding = getattr(bridge, name, None)
        if embedding is not None:
            _center_output(embedding.hf)
    for block in bridge.blocks:
        for writer in _writers(block):
            _center_output(writer)


def _center_unembed(bridge: HookedModelLike) -> None:
    weight = _own_parameter(bridge, bridge.unembed.hf, "weight")  # [d_vocab, d_model]
    weight.sub_(weight.mean(0, keepdim=True))
    bias = getattr(bridge.unembed, "bias", None)
    if bias is not None:
        bias.sub_(bias.mean())


# --------------------------------------------------------------- value biases


def _plan_value_biases(bridge: HookedModelLike, run: Callable[[], Any]) -> dict[int, ValueBias]:
    found = {i: find_value_bias(bridge, i, run) for i in range(len(bridge.blocks))}
    return {i: slot for i, slot in found.items() if slot is not None}


def _fold_value_biases(bridge: HookedModelLike, slots: dict[int, ValueBias]) -> None:
    n_heads = bridge.cfg.n_heads
    for layer, slot in slots.items():
        b_v = slot.value().float()  # [n_v_heads, d_head_v]
        b_v = einops.repeat(b_v, "kv d -> (kv g) d", g=n_heads // b_v.shape[0])  # GQA: per query head
        out_proj = bridge.blocks[layer].attn.out_proj
        w_o = einops.rearrange(weight_in_out(out_proj).float(), "(h d) m -> h d m", h=n_heads)
        delta = torch.einsum("hd,hdm->m", b_v, w_o)  # [d_model]
        bias = getattr(out_proj, "bias", None)
        if bias is None:
            out_proj.bias = nn.Parameter(delta.to(out_proj.weight.dtype), requires_grad=out_proj.weight.requires_grad)
        else:
            bias.add_(delta.to(bias.dtype))
        slot.zero_()
