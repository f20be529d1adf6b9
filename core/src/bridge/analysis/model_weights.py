"""Weight views in TransformerLens's names and shapes, read live from the HF parameters (no copies).

Model-wide views: ``W_E`` ``[d_vocab, d_model]``, ``W_pos`` ``[n_ctx, d_model]``, ``W_U`` ``[d_model, d_vocab]``,
``b_U``; and every per-layer view stacked over layers, e.g. ``W_Q`` ``[n_layers, n_heads, d_model, d_head]``,
``W_out`` ``[n_layers, d_mlp, d_model]``, ``OV``/``QK`` (``FactoredMatrix`` ``[n_layers, n_heads, d_model,
d_model]``). The per-layer views themselves live on the components (``model.blocks[i].attn.W_Q``), see
``bridge.components.weight_views``. A view the model does not have raises ``WeightViewError`` (a
``BridgeError`` and ``AttributeError``) saying what exists instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import einops
import torch

from bridge.analysis.parameter_names import HFStateDict
from bridge.analysis.residual import AnalysisError
from bridge.kernel.components.base import Component
from bridge.kernel.components.weight_views import SurfacesViewErrors, WeightViewError
from bridge.kernel.errors import BridgeError
from bridge.kernel.factored_matrix import FactoredMatrix, composition_scores

if TYPE_CHECKING:
    from torch import nn

    from bridge.analysis.protocol import HookedModelLike

Tokens = str | int | torch.Tensor | Sequence[int]

__all__ = ["HeadLabels", "Tokens", "WeightViewError", "WeightViews", "residual_directions", "unembedding_matrix"]


class CompositionModeError(BridgeError, ValueError):
    """``all_composition_scores`` was given a mode other than ``"Q"``, ``"K"`` or ``"V"``."""


def _what_exists(block: nn.Module, index: int) -> str:
    """The block's components and their HF parameters, for an error about a view the block does not have."""
    parts = []
    for name, child in block.named_children():
        if not isinstance(child, Component):
            continue
        hf = getattr(child, "hf", None)
        params = [f"{n} {list(p.shape)}" for n, p in hf.named_parameters()] if hf is not None else []
        parts.append(f"{name} ({type(hf).__name__}: {', '.join(params) or 'no parameters'})")
    return (
        f"its components are {'; '.join(parts) or 'none'}. Read those as "
        f"model.blocks[{index}].<component>.hf.<parameter>"
    )


def unembedding_matrix(model: HookedModelLike) -> torch.Tensor:
    """``W_U`` ``[d_model, d_vocab]`` of a hooked model (see ``WeightViews.W_U``)."""
    unembed = model._modules.get("unembed")
    if unembed is None:
        raise WeightViewError(f"{type(model.hf_model).__name__} has no LM head, so there is no W_U")
    w_u = unembed.W_U
    assert isinstance(w_u, torch.Tensor)
    return w_u


def residual_directions(model: HookedModelLike, tokens: Tokens) -> torch.Tensor:
    """The unembedding column of each token: ``W_U[:, token]``.

    ``tokens``: a string (must be one token), an int, a one-element tensor → ``[d_model]``; a tensor
    ``[...]`` (or list) of ids → ``[..., d_model]``.
    """
    W_U = unembedding_matrix(model)  # [d_model, d_vocab]
    if isinstance(tokens, str):
        ids = model.to_tokens(tokens, prepend_bos=False)[0]
        if ids.numel() != 1:
            pieces = model.to_str_tokens(ids)
            raise AnalysisError(f"{tokens!r} is {ids.numel()} tokens ({pieces}), not one; pass a single token")
        tokens = ids
    ids = torch.as_tensor(tokens)
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise AnalysisError(f"token ids must be integers, got a {ids.dtype} tensor")
    if ids.numel() and not (int(ids.min()) >= 0 and int(ids.max()) < W_U.shape[-1]):
        low, high = int(ids.min()), int(ids.max())
        raise AnalysisError(f"token ids must be in [0, {W_U.shape[-1]}), got ids from {low} to {high}")
    ids = ids.to(W_U.device)
    if ids.numel() == 1:
        return W_U[:, ids.reshape(()).item()]
    return einops.rearrange(W_U[:, ids], "d_model ... -> ... d_model")


class WeightViews(SurfacesViewErrors):
    """Mixed into ``Bridge``: model-wide weight views and per-layer ones stacked over layers."""

    # ``Bridge`` provides these.
    hf_model: nn.Module
    blocks: nn.ModuleList
    unembed: Any
    cfg: Any

    # ----------------------------------------------------------- embeddings

    @property
    def W_E(self) -> torch.Tensor:
        """Token embedding ``[d_vocab, d_model]`` (the raw table: any scale or norm applied after it is not in it)."""
        try:
            table = self.hf_model.get_input_embeddings()
        except (NotImplementedError, AttributeError):
            table = None
        if table is None:
            embed = self._modules.get("embed")
            table = embed.hf if embed is not None else None
        if table is None or getattr(table, "weight", None) is None:
            raise WeightViewError(f"{type(self.hf_model).__name__} has no token embedding table, so there is no W_E")
        return table.weight

    @property
    def W_pos(self) -> torch.Tensor:
        """Position embedding table ``[n_ctx, d_model]``, row ``p`` for position ``p`` (absent for rotary/ALiBi
        models). A table read at ``position + offset`` (OPT's and XGLM's ``offset`` of 2) starts at row ``offset``;
        a fixed sinusoidal table (a ``weights`` buffer, XGLM) is given as it is."""
        pos = self._modules.get("pos_embed")
        if pos is None:
            raise WeightViewError(
                f"{type(self.hf_model).__name__} has no learned position embedding "
                f"(positional_embedding_type={self.cfg.positional_embedding_type!r}), so there is no W_pos"
            )
        return pos.W_pos

    @property
    def W_E_pos(self) -> torch.Tensor:
        """``W_E`` and ``W_pos`` stacked: ``[d_vocab + n_ctx, d_model]`` (learned positions only)."""
        return torch.cat([self.W_E, self.W_pos], dim=0)

    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding ``[d_model, d_vocab]``, so that ``logits = final_resid @ W_U + b_U``: the LM head's weight,
        times the model's logit scale where it multiplies the head's output (``cfg.extra["logit_scale"]``, Cohere);
        then it is a scaled copy, not the parameter."""
        return unembedding_matrix(self)

    def tokens_to_residual_directions(self, tokens: Tokens) -> torch.Tensor:
        """``W_U[:, tokens]``: ``[d_model]`` for one token (an int, a one-token string…), else ``[..., d_model]``."""
        return residual_directions(self, tokens)

    @property
    def b_U(self) -> torch.Tensor:
        """Unembedding bias ``[d_vocab]`` (zeros when the head has none; times the logit scale, as ``W_U``)."""
        unembedding_matrix(self)  # the error for a model without a head
        return self.unembed.b_U

    # ------------------------------------------------------ stacked per layer

    def _layers(self, part: Literal["attn", "mlp"], view: str) -> list[nn.Module]:
        """Each block's ``part`` component, or a ``WeightViewError`` naming what the blocks have instead."""
        if not len(self.blocks):
            towers = [n for n, m in self.named_children() if hasattr(m, "blocks") and n != "hf_model"]
            raise WeightViewError(
                f"this model's blocks are in its towers {towers}, so there is no model.{view}; use the tower's "
                f"components, e.g. model.{towers[0] if towers else '<tower>'}.blocks[i].{part}.{view}"
            )
        out = []
        for i, block in enumerate(self.blocks):
            component = block._modules.get(part)
            if component is None:
                kind = "attention layer" if part == "attn" else "MLP"
                exists = _what_exists(block, i)
                raise WeightViewError(f"blocks.{i} has no {kind}, so there is no model.{view}; {exists}")
            if part == "mlp" and not getattr(component, "stacks_as_dense", True):
                moe = [j for j, b in enumerate(self.blocks) if not getattr(b.mlp, "stacks_as_dense", True)]
                raise WeightViewError(
                    f"blocks {moe} have mixture-of-experts MLPs, so there is no dense model.{view}; use "
                    f"model.blocks[i].mlp.{view} (per expert, [n_experts, ...]) on those layers"
                )
            out.append(component)
        return out

    def _stack(self, part: Literal["attn", "mlp"], view: str) -> torch.Tensor:
        return torch.stack([getattr(layer, view) for layer in self._layers(part, view)])

    @property
    def W_Q(self) -> torch.Tensor:
        """``[n_layers, n_heads, d_model, d_head]``."""
        return self._stack("attn", "W_Q")

    @property
    def W_K(self) -> torch.Tensor:
        """``[n_layers, n_heads, d_model, d_head]`` (GQA/MQA expanded to ``n_heads``)."""
        return self._stack("attn", "W_K")

    @property
    def W_V(self) -> torch.Tensor:
        """``[n_layers, n_heads, d_model, d_head_v]`` (GQA/MQA expanded to ``n_heads``)."""
        return self._stack("attn", "W_V")

    @property
    def _W_K(self) -> torch.Tensor:
        """``[n_layers, n_kv_heads, d_model, d_head]``."""
        return self._stack("attn", "_W_K")

    @property
    def _W_V(self) -> torch.Tensor:
        """``[n_layers, n_kv_heads, d_model, d_head_v]``."""
        return self._stack("attn", "_W_V")

    @property
    def W_O(self) -> torch.Tensor:
        """``[n_layers, n_heads, d_head_v, d_model]``."""
        return self._stack("attn", "W_O")

    @property
    def b_Q(self) -> torch.Tensor:
        """``[n_layers, n_heads, d_head]``."""
        return self._stack("attn", "b_Q")

    @property
    def b_K(self) -> torch.Tensor:
        """``[n_layers, n_heads, d_head]`` (GQA/MQA expanded)."""
        return self._stack("attn", "b_K")

    @property
    def b_V(self) -> torch.Tensor:
        """``[n_layers, n_heads, d_head_v]`` (GQA/MQA expanded)."""
        return self._stack("attn", "b_V")

    @property
    def _b_K(self) -> torch.Tensor:
        """``[n_layers, n_kv_heads, d_head]``."""
        return self._stack("attn", "_b_K")

    @property
    def _b_V(self) -> torch.Tensor:
        """``[n_layers, n_kv_heads, d_head_v]``."""
        return self._stack("attn", "_b_V")

    @property
    def b_O(self) -> torch.Tensor:
        """``[n_layers, d_model]``."""
        return self._stack("attn", "b_O")

    @property
    def W_in(self) -> torch.Tensor:
        """``[n_layers, d_model, d_mlp]`` (the up projection of gated MLPs)."""
        return self._stack("mlp", "W_in")

    @property
    def W_gate(self) -> torch.Tensor | None:
        """``[n_layers, d_model, d_mlp]`` for gated MLPs; None when no MLP is gated (as TransformerLens)."""
        layers = self._layers("mlp", "W_gate")
        gated = [hasattr(layer, "W_gate") for layer in layers]
        if not any(gated):
            return None
        if not all(gated):
            raise WeightViewError(
                f"only blocks {[i for i, g in enumerate(gated) if g]} have gated MLPs, so model.W_gate cannot be "
                "stacked; use model.blocks[i].mlp.W_gate"
            )
        return torch.stack([layer.W_gate for layer in layers])

    @property
    def W_out(self) -> torch.Tensor:
        """``[n_layers, d_mlp, d_model]``."""
        return self._stack("mlp", "W_out")

    @property
    def b_in(self) -> torch.Tensor:
        """``[n_layers, d_mlp]``."""
        return self._stack("mlp", "b_in")

    @property
    def b_out(self) -> torch.Tensor:
        """``[n_layers, d_model]``."""
        return self._stack("mlp", "b_out")

    # ------------------------------------------------------------- circuits

    @property
    def QK(self) -> FactoredMatrix:
        """``W_Q @ W_Kᵀ`` for every head, factored: ``[n_layers, n_heads, d_model, d_model]``."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """``W_V @ W_O`` for every head, factored: ``[n_layers, n_heads, d_model, d_model]``."""
        return FactoredMatrix(self.W_V, self.W_O)

    def all_composition_scores(self, mode: Literal["Q", "K", "V"]) -> torch.Tensor:
        """Composition scores of every earlier head's OV into every later head: ``[L, H, L, H]``.

        ``scores[l1, h1, l2, h2] = ‖OV[l1, h1] · M[l2, h2]‖ / (‖OV[l1, h1]‖ ‖M[l2, h2]‖)`` (Frobenius norms),
        with ``M`` the ``QK`` circuit for ``"Q"``, ``QKᵀ`` for ``"K"`` and ``OV`` for ``"V"``; zero unless
        ``l1 < l2``.
        """
        if mode == "Q":
            right = self.QK
        elif mode == "K":
            right = self.QK.T
        elif mode == "V":
            right = self.OV
        else:
            raise CompositionModeError(f"mode must be 'Q', 'K' or 'V' (which input of the later head), not {mode!r}")
        scores = composition_scores(self.OV, right, broadcast_dims=True)  # [L, H, L, H]
        layers = torch.arange(scores.shape[0], device=scores.device)
        earlier = layers[:, None, None, None] < layers[None, None, :, None]
        return torch.where(earlier, scores, torch.zeros_like(scores))

    def tl_parameters(self) -> dict[str, torch.Tensor]:
        """Every weight view under its TransformerLens parameter name (``"blocks.0.attn.W_Q"``,
        ``"blocks.0.ln1.w"``, ``"unembed.W_U"``…), as TransformerLens's ``SVDInterpreter`` reads them.

        Views that the model does not have (MoE dense MLP views, MLA's ``W_K``…) are left out; norm
        weights are the effective scale (Gemma's ``1 + w``)."""
        params: dict[str, torch.Tensor] = {}

        def put(name: str, read: Any) -> None:
            try:
                value = read()
            except AttributeError:  # a view this model does not have (WeightViewError is one)
                return
            if isinstance(value, torch.Tensor):
                params[name] = value

        put("embed.W_E", lambda: self.W_E)
        put("pos_embed.W_pos", lambda: self.W_pos)
        for i, block in enumerate(self.blocks):
            for part, views in (
                ("attn", ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")),
                ("mlp", ("W_in", "W_out", "b_in", "b_out", "W_gate")),  # TransformerLens 4's names and order
            ):
                component = block._modules.get(part)
                if component is None or (part == "mlp" and not getattr(component, "stacks_as_dense", True)):
                    continue
                for view in views:
                    put(f"blocks.{i}.{part}.{view}", lambda c=component, v=view: getattr(c, v))
            for norm_name in ("ln1", "ln2"):
                self._put_norm(params, f"blocks.{i}.{norm_name}", block._modules.get(norm_name))
        self._put_norm(params, "ln_final", self._modules.get("ln_final"))
        put("unembed.W_U", lambda: self.W_U)
        put("unembed.b_U", lambda: self.b_U)
        return params

    def tl_named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``tl_parameters()`` as ``(name, tensor)`` pairs, like ``named_parameters()``."""
        return iter(self.tl_parameters().items())

    @staticmethod
    def _put_norm(params: dict[str, torch.Tensor], prefix: str, norm: nn.Module | None) -> None:
        hf = getattr(norm, "hf", None)
        weight = getattr(hf, "weight", None)
        if isinstance(weight, torch.Tensor):
            offset = getattr(norm, "weight_offset", 0.0)
            params[f"{prefix}.w"] = weight + offset if offset else weight
        bias = getattr(hf, "bias", None)
        if isinstance(bias, torch.Tensor):
            params[f"{prefix}.b"] = bias

    # --------------------------------------------------------- TransformerLens helpers

    @property
    def all_head_labels(self) -> HeadLabels:
        """``["L0H0", "L0H1", …]``, layer-major (TransformerLens 4's property; calling it, as
        ``HookedTransformer``'s method, gives the same list)."""
        return HeadLabels(f"L{l}H{h}" for l in range(self.cfg.n_layers) for h in range(self.cfg.n_heads))

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> torch.Tensor:
        """The sum of the output biases written to the residual stream before block ``layer``: ``Σ b_O`` and
        (``include_mlp_biases``) ``Σ b_out`` over blocks ``< layer``; ``mlp_input`` adds block ``layer``'s ``b_O``
        (the bias in the MLP's input). ``[d_model]``."""
        n = self.cfg.n_layers
        if not 0 <= layer <= n or (mlp_input and layer == n):
            last = n - 1 if mlp_input else n
            raise AnalysisError(f"layer must be in [0, {last}]{' with mlp_input' if mlp_input else ''}, got {layer}")
        terms: list[torch.Tensor] = []
        for i in range(layer + (1 if mlp_input else 0)):
            block = self.blocks[i]
            attn = block._modules.get("attn")
            if attn is None:
                raise WeightViewError(
                    f"blocks.{i} has no attention layer, so its output bias is not known; {_what_exists(block, i)}"
                )
            terms.append(attn.b_O)
            if include_mlp_biases and i < layer and block._modules.get("mlp") is not None:
                mlp = block.mlp
                if not getattr(mlp, "stacks_as_dense", True):
                    raise WeightViewError(
                        f"blocks.{i} has a mixture-of-experts MLP, whose output bias depends on the routing; "
                        "pass include_mlp_biases=False"
                    )
                terms.append(mlp.b_out)
        like = self.W_E
        total = torch.zeros(self.cfg.d_model, dtype=like.dtype, device=like.device)
        for term in terms:
            total = total + term.to(total.device)
        return total

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The HF model's parameters and buffers under their HF names (``hf_model.…``), as ``named_parameters()``;
        a TransformerLens name looked up in it (``["blocks.0.attn.W_Q"]``) raises an error pointing to
        ``tl_parameters()``."""
        out = super().state_dict(*args, **kwargs)  # type: ignore[misc]
        if args or kwargs.get("destination") is not None or kwargs.get("prefix") or type(out) is not OrderedDict:
            return out
        hinted = HFStateDict(out)
        metadata = getattr(out, "_metadata", None)
        if metadata is not None:
            hinted._metadata = metadata  # type: ignore[attr-defined]
        return hinted


class HeadLabels(list):
    """A list of head labels that can also be called: ``model.all_head_labels`` (TransformerLens 4) and
    ``model.all_head_labels()`` (``HookedTransformer``) both work."""

    def __call__(self) -> list[str]:
        return list(self)
