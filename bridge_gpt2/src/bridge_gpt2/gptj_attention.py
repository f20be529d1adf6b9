"""GPT-J's attention and block, shared by GPT-J and CodeGen.

HF's modules compute attention inline (``_attn``), not through ``AttentionInterface``, so the seam never sees
them: while an attention-internal hook is in use, the module's forward is replaced by the same computation
around ``Attention.attend_with_hooks``, which fires ``hook_rot_q/k`` ``[b, p, h, d]``, ``hook_attn_scores``,
``hook_pattern`` ``[b, h, q, k]`` and ``hook_z`` ``[b, p, h, d]``. The arithmetic is HF's own: rotary with
every two adjacent dimensions rotated together on the first ``rotary_dim`` dimensions of each head, then
scores ``q·kᵀ`` in float32 divided by ``√d_head``, plus the additive mask. (CodeGen's HF code adds the mask
before dividing: that changes only the masked entries, the mask's minimum over ``√d_head`` instead of the
minimum, which the softmax zeroes either way; so ``hook_attn_scores`` holds masked entries as the dtype's minimum,
as for every other model, and the pattern is HF's bit for bit.) With no internal hook in use, HF's own forward
runs untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import einops
import torch
from torch import nn
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb

from bridge.components import Attention, ForwardOverride, FusedQKV, SharedNormParallelBlock, SplitQKV, split_partitioned
from bridge.kernel import BridgeConfig, BridgeError

#: CodeGen's fused ``qkv_proj`` is laid out for 4 model-parallel shards (HF hard-codes ``mp_num = 4``),
#: each holding ``[q | v | k]`` for a quarter of the heads.
CODEGEN_PARTITIONS = 4
CODEGEN_QKV = FusedQKV("qkv_proj", layout="partitioned", partitions=CODEGEN_PARTITIONS, order="qvk")


class GPTJBlock(SharedNormParallelBlock):
    """GPT-J's block: ``n = ln_1(pre)``, ``post = pre + (attn(n) + mlp(n))``; HF returns ``(hidden, weights)``."""

    returns_attention_weights = True


def gptj_attention_core(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    on_scores: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_pattern: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's ``_attn`` of GPT-J (and CodeGen, see the module docstring), firing ``on_scores``/``on_pattern``:
    ``q·kᵀ`` in float32, divided by ``√d_head``, plus HF's additive mask; softmax, cast to the values' dtype,
    the module's dropout, ``@ value``.

    query ``[b, h, q, d]``, key/value ``[b, h, k, d]`` → ``(z [b, q, h, d], weights [b, h, q, k])``."""
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) / module.scale_attn
    if attention_mask is not None:
        scores = scores + attention_mask
    if on_scores is not None:
        scores = on_scores(scores)
    pattern = torch.softmax(scores, dim=-1).to(value.dtype)
    if on_pattern is not None:
        pattern = on_pattern(pattern)
    weights = module.attn_dropout(pattern)
    z = torch.matmul(weights, value).transpose(1, 2)  # [b, h, q, d] -> [b, q, h, d]
    return z, weights


class GPTJStyleAttention(Attention):
    """The attention of GPT-J's layout, re-expressed around ``attend_with_hooks`` while an internal hook is in use.

    Subclasses give the q/k/v source (``qkv_source``), how the HF module projects them (``project``) and whether
    the sines and cosines are cast to the keys' dtype (GPT-J) or not (CodeGen).
    """

    uses_seam = False
    qkv_source: ClassVar[SplitQKV | FusedQKV]
    sincos_in_key_dtype: ClassVar[bool]

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module, cfg, qkv=self.qkv_source, out="out_proj", rotary=True)
        internal = tuple(getattr(self, name) for name in self.internal_hooks)
        self.attach(ForwardOverride(hf_module, self.forward_with_hooks, internal))

    def project(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The HF module's q, k, v of ``hidden_states`` ``[b, p, d_model]``, each ``[b, p, n_heads, d_head]``
        (through the HF projection modules, so ``hook_q/k/v`` fire)."""
        raise NotImplementedError

    def rotate(self, x: torch.Tensor, position_ids: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        """HF's rotary on ``x`` ``[b, p, h, d]``: adjacent pairs of the first ``rotary_dim`` dimensions rotated by
        the module's sinusoid table at ``position_ids`` ``[b or 1, p]`` (cast to ``dtype`` when given)."""
        m = self.hf_module
        sincos = m.embed_positions.to(position_ids.device)[position_ids]  # [b or 1, p, rotary_dim]
        if dtype is not None:
            sincos = sincos.to(dtype)
        sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)
        rotated = apply_rotary_pos_emb(x[..., : m.rotary_dim], sin, cos)
        return torch.cat([rotated, x[..., m.rotary_dim :]], dim=-1)

    def forward_with_hooks(
        self,
        original: Any,
        hidden_states: torch.Tensor,
        layer_past: Any = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The HF module's forward, firing the internal hooks: ``hidden_states`` ``[b, p, d_model]`` →
        ``(output [b, p, d_model], attention weights [b, h, p, k])``."""
        m = self.hf_module
        implementation = getattr(getattr(m, "config", None), "_attn_implementation", None)  # CodeGen's has none
        if implementation not in (None, "eager"):
            raise BridgeError(
                f"{type(m).__name__} runs {implementation!r} attention, which bridge cannot hook "
                "inside (hook_rot_q/k, hook_attn_scores, hook_pattern, hook_z); load the model with "
                "attn_implementation='eager'"
            )
        query, key, value = self.project(hidden_states)  # [b, p, h, d]
        dtype = key.dtype if self.sincos_in_key_dtype else None
        query, key = self.rotate(query, position_ids, dtype), self.rotate(key, position_ids, dtype)
        to_heads_first = "b p h d -> b h p d"
        query, key, value = (einops.rearrange(t, to_heads_first) for t in (query, key, value))
        if layer_past is not None:
            key, value = layer_past.update(key.to(hidden_states.dtype), value, m.layer_idx)
        z, weights = self.attend_with_hooks(m, query, key, value, attention_mask, core=gptj_attention_core)
        out = m.out_proj(einops.rearrange(z, "b p h d -> b p (h d)"))
        return m.resid_dropout(out), weights


class GPTJAttention(GPTJStyleAttention):
    """GPT-J: separate ``q_proj``/``k_proj``/``v_proj`` (no biases); sines and cosines in the keys' dtype."""

    qkv_source = SplitQKV("q_proj", "k_proj", "v_proj")
    sincos_in_key_dtype = True

    def project(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, split = self.hf_module, "b p (h d) -> b p h d"
        q, k, v = (m.q_proj(hidden_states), m.k_proj(hidden_states), m.v_proj(hidden_states))
        return tuple(einops.rearrange(t, split, h=self.n_heads) for t in (q, k, v))  # type: ignore[return-value]


class CodeGenAttention(GPTJStyleAttention):
    """CodeGen: one ``qkv_proj`` in 4 parts of ``[q | v | k]`` (``CODEGEN_QKV``); sines and cosines stay float32."""

    qkv_source = CODEGEN_QKV
    sincos_in_key_dtype = False

    def project(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fused = self.hf_module.qkv_proj(hidden_states)  # [b, p, 3·d_model]
        source = self.qkv_source
        return split_partitioned(fused, self.n_heads, self.n_kv_heads, self.d_head, source.partitions, source.order)
