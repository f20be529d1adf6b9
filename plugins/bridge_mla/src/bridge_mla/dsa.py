"""DeepSeek Sparse Attention (DSA): MLA whose keys are chosen per query by a learned indexer (DeepSeek-V3.2,
GLM-MoE-DSA / GLM-5).

Each layer's indexer scores every earlier position for every query, ``s[b, q, k] = Σ_h w[b, q, h] · relu(q_h · k) ·
d⁻½`` (its own small query heads from the q latent, one shared key, per-head weights from the hidden state,
RoPE on part of each), adds the causal mask and keeps the ``index_topk`` best keys; attention is then MLA masked
to those keys. ``DSAAttention`` is ``MLAAttention`` (every MLA hook) with:

- ``hook_index_scores`` ``[b, q, k]`` (layers with their own indexer): the indexer's scores after the causal mask
  (masked keys at the dtype's minimum or ``-inf``, as HF masks them), what the top-k reads. While it is hooked the
  indexer's forward is re-expressed with its own modules and HF's rotary function, so a patch re-selects the keys;
- ``hook_topk_indices`` ``[b, q, topk]`` (int32): the chosen key positions, what the attention is masked to; a
  patch changes which keys each query may attend to. GLM-MoE-DSA's ``"shared"`` layers run no indexer and reuse the
  previous layer's choice: there it fires on that choice as the layer receives it (a patch there also reaches the
  next shared layers, which reuse what this one used).

Under the bridge, HF's attention sees the implementation ``"bridge"`` and so hands the chosen indices to the
attention function instead of folding them into the mask; every DSA layer therefore passes the seam, which folds
them exactly as HF's eager and SDPA paths do (unselected keys masked) before running the user's implementation.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import einops
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from bridge import BridgeError
from bridge.components import Attachment, ForwardOverride, ModuleHook, OutputTap, SequentialBlock, first_output
from bridge.kernel import BridgeConfig, HookPoint
from bridge_mla.attention import MLAAttention, Rotate

#: ``index_rotate(modeling, q_rot [b, p, h, r], k_rot [b, p, 1, r], cos, sin) -> (q_rot, k_rot)``: the rotary the
#: indexer applies (on ``[b, p, heads, d]`` tensors: ``unsqueeze_dim=2``).
IndexRotate = Callable[[Any, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def index_rotate_halves(modeling: Any, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """DeepSeek-V3.2's indexer: HF's ``apply_rotary_pos_emb`` (halves pairing), unlike its main attention."""
    return modeling.apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=2)


def index_rotate_interleaved(modeling: Any, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """GLM-MoE-DSA's indexer: HF's ``apply_rotary_pos_emb_interleave`` (adjacent pairs)."""
    return modeling.apply_rotary_pos_emb_interleave(q, k, cos, sin, unsqueeze_dim=2)


def rotate_interleaved(hf_attn: nn.Module, q: torch.Tensor, k: torch.Tensor, cos_sin: Any):
    """The DSA models' main attention: HF's ``apply_rotary_pos_emb_interleave`` (always interleaved)."""
    cos, sin = cos_sin
    return sys.modules[type(hf_attn).__module__].apply_rotary_pos_emb_interleave(q, k, cos, sin)


def fold_index_mask(
    attention_mask: torch.Tensor, indices: torch.Tensor, n_keys: int, dtype: torch.dtype
) -> torch.Tensor:
    """The attention mask ``[b, 1, q, k]`` with every key not in ``indices`` ``[b, q, topk]`` masked, as HF's DSA
    attention folds it for eager (additive: the dtype's minimum) and SDPA (boolean: False)."""
    b, q_len = indices.shape[:2]
    unselected = torch.ones(b, q_len, n_keys, dtype=torch.bool, device=indices.device)
    unselected = unselected.scatter(-1, indices.long(), False).unsqueeze(1)  # [b, 1, q, k]; True = masked
    if attention_mask.dtype == torch.bool:
        return attention_mask & ~unselected
    return attention_mask.masked_fill(unselected, torch.finfo(dtype).min)


class KwargTap(Attachment):
    """Run ``fn`` on a keyword argument of an HF module's call (a forward pre-hook), when it is given and not None."""

    def __init__(self, module: nn.Module, name: str, fn: Callable[[Any], Any], hooks: tuple[HookPoint, ...]) -> None:
        super().__init__(module, hooks)
        self.name = name
        self.fn = fn
        self._handle: RemovableHandle | None = None

    def _on_call(self, _module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple | None:
        if kwargs.get(self.name) is None:
            return None
        return args, {**kwargs, self.name: self.fn(kwargs[self.name])}

    def _attach(self) -> None:
        self._handle = self.module.register_forward_pre_hook(ModuleHook(self._on_call), with_kwargs=True)

    def _detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = None


class DSAAttention(MLAAttention):
    """MLA with DeepSeek Sparse Attention's indexer: ``hook_index_scores`` and ``hook_topk_indices`` (see the
    module doc) on top of every ``MLAAttention`` hook."""

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        rotate: Rotate,
        index_rotate: IndexRotate,
        out: str = "o_proj",
    ) -> None:
        super().__init__(hf_module, cfg, rotate, out)
        self.index_rotate = index_rotate
        self.hook_topk_indices = HookPoint()
        indexer = getattr(hf_module, "indexer", None)
        if indexer is not None:
            self.hook_index_scores = HookPoint()
            self.attach(ForwardOverride(indexer, self._indexer_with_scores, (self.hook_index_scores,)))
            self.attach(OutputTap(indexer, self.hook_topk_indices, (self.hook_topk_indices,)))
        else:  # a layer reusing the previous layer's choice (GLM-MoE-DSA's "shared" layers)
            self.attach(KwargTap(hf_module, "prev_topk_indices", self.hook_topk_indices, (self.hook_topk_indices,)))
        self.seam_active = True  # the seam folds the chosen keys into the mask (see the module doc)

    def _update_seam(self) -> None:
        self.seam_active = True

    def run_seam(self, inner: Callable, module: nn.Module, query, key, value, attention_mask, **kwargs):
        """Fold HF's ``indices`` into the mask as its eager/SDPA paths do; then run the user's implementation, or
        core's hooked attention while an attention-internal hook is in use."""
        indices = kwargs.pop("indices", None)
        if indices is not None:
            attention_mask = fold_index_mask(attention_mask, indices, key.shape[2], query.dtype)
        if any(hook.active for hook in self._seam_hooks()):
            return super().run_seam(inner, module, query, key, value, attention_mask, **kwargs)
        return inner(module, query, key, value, attention_mask, **kwargs)

    @torch.no_grad()
    def _indexer_with_scores(
        self,
        _original: Callable,
        hidden_states: torch.Tensor,
        q_resid: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
    ) -> torch.Tensor:
        """HF's indexer forward with its own modules, ``hook_index_scores`` on the masked scores before the top-k."""
        idx = self.hf_module.indexer
        modeling = sys.modules[type(idx).__module__]
        rope = idx.qk_rope_head_dim
        cos, sin = position_embeddings
        q = einops.rearrange(idx.wq_b(q_resid), "b p (h d) -> b p h d", h=idx.n_heads)
        q_rot, q_pass = q.split([rope, idx.head_dim - rope], dim=-1)
        k = idx.k_norm(idx.wk(hidden_states)).unsqueeze(2)  # [b, p, 1, d]: one key head
        k_rot, k_pass = k.split([rope, idx.head_dim - rope], dim=-1)
        q_rot, k_rot = self.index_rotate(modeling, q_rot, k_rot, cos, sin)
        q = torch.cat([q_rot, q_pass], dim=-1)  # [b, q, h, d]
        k = torch.cat([k_rot, k_pass], dim=-1).squeeze(2)  # [b, k, d]
        if past_key_values is not None:
            k = past_key_values.update_indexer(k, idx.layer_idx)
        scores = F.relu(torch.matmul(q.float(), k.transpose(-1, -2).float().unsqueeze(1)) * idx.softmax_scale)
        weights = idx.weights_proj(hidden_states.to(idx.weights_proj.weight.dtype)).float() * idx.n_heads**-0.5
        index_scores = torch.matmul(weights.unsqueeze(-2), scores).squeeze(-2)  # [b, q, 1, h] @ [b, q, h, k]
        if attention_mask.dtype == torch.bool:
            index_scores = index_scores.masked_fill(~attention_mask, float("-inf"))
        else:
            index_scores = index_scores + attention_mask
        index_scores = self.hook_index_scores(index_scores)  # [b, q, k]
        topk = min(idx.index_topk, index_scores.shape[-1])
        return index_scores.topk(topk, dim=-1).indices.to(torch.int32)

    def _forward_with_hook_k(
        self,
        _original: Callable,
        hidden_states: torch.Tensor,
        *,
        position_embeddings: Any,
        attention_mask: torch.Tensor,
        past_key_values: Any = None,
        position_ids: torch.Tensor | None = None,
        prev_topk_indices: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple:
        """HF's DSA attention forward with the same submodules, the pre-rotary per-head key materialised for
        ``hook_k`` (a patch there, even per head, is rotated and used); the indexer reads the hidden states and the
        q latent as in HF."""
        if past_key_values is not None:
            raise BridgeError(
                f"{self.hook_k.name} is not available with a KV cache (MLA caches latents, not per-head keys); "
                "hook rot_k, kv_latent or k_rope instead, or run without a cache."
            )
        hf = self.hf_module
        q_resid = hf.q_a_layernorm(hf.q_a_proj(hidden_states))
        q = einops.rearrange(hf.q_b_proj(q_resid), "b p (h d) -> b h p d", h=self.n_heads)
        q_nope, q_rope = q.split([self.nope, self.rope], dim=-1)
        latent, k_rope = hf.kv_a_proj_with_mqa(hidden_states).split([self.kv_rank, self.rope], dim=-1)
        kv = einops.rearrange(hf.kv_b_proj(hf.kv_a_layernorm(latent)), "b p (h d) -> b p h d", h=self.n_heads)
        k_nope, value = kv.split([self.nope, self.d_v], dim=-1)
        shared = einops.repeat(k_rope, "b p r -> b p h r", h=self.n_heads)
        key = einops.rearrange(self.hook_k(torch.cat([k_nope, shared], dim=-1)), "b p h d -> b h p d")
        k_nope, k_rope = key.split([self.nope, self.rope], dim=-1)
        q_rope, k_rope = self.rotate(hf, q_rope, k_rope, position_embeddings)
        query, key = torch.cat([q_nope, q_rope], dim=-1), torch.cat([k_nope, k_rope], dim=-1)
        value = einops.rearrange(value, "b p h d -> b h p d")
        if getattr(hf, "indexer", None) is not None:
            topk = hf.indexer(hidden_states, q_resid, position_embeddings, attention_mask[:, 0], position_ids)
        elif prev_topk_indices is None:
            raise BridgeError(f"{self.hook_k.name}: this layer reuses a previous layer's top-k, which it was not given")
        else:
            topk = prev_topk_indices
        indices = None
        if hf.config._attn_implementation in ("eager", "sdpa"):  # as HF: folded here, else by the seam
            attention_mask = fold_index_mask(attention_mask, topk, key.shape[2], hidden_states.dtype)
        else:
            indices = topk
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            hf.config._attn_implementation, sys.modules[type(hf).__module__].eager_attention_forward
        )
        out, weights = interface(
            hf,
            query,
            key,
            value,
            attention_mask,
            dropout=hf.attention_dropout if hf.training else 0.0,
            scaling=hf.scaling,
            indices=indices,
            **kwargs,
        )
        out = hf.o_proj(einops.rearrange(out, "b p h d -> b p (h d)"))
        return (out, weights, topk) if hasattr(hf, "skip_topk") else (out, weights)


class TopkPassingBlock(SequentialBlock):
    """Core's sequential block for layers that hand their attention's top-k choice to the next layer (GLM-MoE-DSA:
    the HF layer returns ``(hidden_states, topk_indices)``)."""

    def run_attention(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        result = self.hf_modules["attn"](x, **call_kwargs)  # (output, weights, topk_indices)
        self._topk = result[2]
        return first_output(result), result[1]

    def block_output(self, resid_post: torch.Tensor, attention_weights: Any = None) -> Any:
        topk, self._topk = self._topk, None
        return resid_post, topk
