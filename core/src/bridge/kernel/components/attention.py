"""Attention: projections, the seam, and the per-head output projection.

Hook points (shapes batch first):

- ``hook_q`` ``[b, p, n_heads, d_head]``, ``hook_k``/``hook_v`` ``[b, p, n_kv_heads, d_head]``: at the
  projections, before any rotary embedding (a ``QKVSource`` says where they are);
- ``hook_rot_q``/``hook_rot_k``: after rotary, at the seam (rotary models only);
- ``hook_attn_scores`` (scaled, soft-capped, masked, pre-softmax) and ``hook_pattern``
  ``[b, n_heads, q, k]``: on the seam's eager path, taken only when one of them is hooked;
- ``hook_sink_logits`` ``[b, q, n_heads]`` (layers with attention sinks, ``sinks=True``): each head's sink logit,
  the extra key with no value that joins every row's softmax; on the eager path, like the scores. With sinks,
  ``hook_pattern`` holds the real keys' share only (rows sum to less than 1);
- ``hook_z`` ``[b, p, n_heads, d_head]``: the seam's output, before the output projection;
- ``hook_result`` ``[b, p, n_heads, d_model]`` (opt-in): per-head output, summed into the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import einops
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from bridge.kernel import seam
from bridge.kernel.components.base import Component, ForwardOverride, OutputTap
from bridge.kernel.components.head_inputs import ProjectionLayout
from bridge.kernel.components.weight_views import (
    CoreAttentionWeights,
    QKVWeights,
    fused_qkv,
    merge_partitioned,
    partition_heads,
    partition_slice,
    separate_qkv,
    split_partitioned,
)
from bridge.kernel.config import BridgeConfig
from bridge.kernel.hook_points import HookPoint


def weight_in_out(module: nn.Module) -> torch.Tensor:
    """A linear layer's weight as ``[d_in, d_out]`` (HF ``Conv1D`` stores it so; ``nn.Linear`` transposed)."""
    if isinstance(module, Conv1D):
        return module.weight
    return module.weight.T


def heads(hook: HookPoint, x: torch.Tensor, n: int) -> torch.Tensor:
    """Fire ``hook`` on a flat ``[b, p, n*d]`` projection output seen as ``[b, p, n, d]``."""
    out = hook(einops.rearrange(x, "b p (n d) -> b p n d", n=n))
    return einops.rearrange(out, "b p n d -> b p (n d)")


class QKVSource:
    """Where an attention module's pre-rotary q, k and v can be seen."""

    def attachments(self, attn: Attention, hf_attn: nn.Module) -> list:
        raise NotImplementedError

    def projection_layout(self, attn: Attention) -> ProjectionLayout | None:
        """Which output columns of which projection module hold each head's q, k and v
        (``None``: per-head inputs are not supported)."""
        return None

    def weights(self, attn: Attention) -> QKVWeights | None:
        """Per-head views of the q/k/v projections (``None``: this source has none)."""
        return None


@dataclass(frozen=True)
class SplitQKV(QKVSource):
    """Separate ``q``, ``k``, ``v`` projection modules (Llama-style)."""

    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"

    def attachments(self, attn: Attention, hf_attn: nn.Module) -> list:
        out = []
        for path, hook, n in (
            (self.q, attn.hook_q, attn.n_heads),
            (self.k, attn.hook_k, attn.n_kv_heads),
            (self.v, attn.hook_v, attn.n_kv_heads),
        ):
            out.append(OutputTap(hf_attn.get_submodule(path), _heads_fn(hook, n), (hook,)))
        return out

    def weights(self, attn: Attention) -> QKVWeights:
        get = attn.hf.get_submodule
        return separate_qkv(get(self.q), get(self.k), get(self.v), attn.d_head)

    def projection_layout(self, attn: Attention) -> ProjectionLayout:
        d = attn.d_head
        return {
            path: [(kind, i, slice(i * d, (i + 1) * d)) for i in range(n)]
            for path, kind, n in (
                (self.q, "q", attn.n_heads),
                (self.k, "k", attn.n_kv_heads),
                (self.v, "v", attn.n_kv_heads),
            )
        }


def _heads_fn(hook: HookPoint, n: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: heads(hook, x, n)


@dataclass(frozen=True)
class FusedQKV(QKVSource):
    """One fused projection module.

    ``layout="grouped"``: ``[q (n_heads·d) | k (n_kv·d) | v (n_kv·d)]`` (GPT-2, GPT-BigCode MQA, Phi-3);
    ``layout="per_head"``: per head ``[q | k | v]`` (GPT-NeoX, BLOOM, GPT-BigCode without MQA);
    ``layout="partitioned"``: ``partitions`` equal parts, each holding its share of the heads of each kind
    in ``order`` (CodeGen: ``partitions=4, order="qvk"``, part ``i`` holding heads ``i·h/4 … (i+1)·h/4 - 1``).
    """

    path: str
    layout: Literal["grouped", "per_head", "partitioned"] = "grouped"
    partitions: int = 1
    order: str = "qkv"

    def attachments(self, attn: Attention, hf_attn: nn.Module) -> list:
        if self.layout == "partitioned":
            partition_heads(attn.n_heads, attn.n_kv_heads, self.partitions, self.order)  # raises if they do not fit
        hooks = (attn.hook_q, attn.hook_k, attn.hook_v)
        return [OutputTap(hf_attn.get_submodule(self.path), lambda x: self.split_fire(attn, x), hooks)]

    def split_fire(self, attn: Attention, fused: torch.Tensor) -> torch.Tensor:
        h, kv, d = attn.n_heads, attn.n_kv_heads, attn.d_head
        if self.layout == "partitioned":
            q, k, v = split_partitioned(fused, h, kv, d, self.partitions, self.order)  # [b, p, h or kv, d]
            return merge_partitioned(attn.hook_q(q), attn.hook_k(k), attn.hook_v(v), self.partitions, self.order)
        if self.layout == "per_head":
            q, k, v = einops.rearrange(fused, "b p (h three d) -> three b p h d", three=3, h=h)
            q, k, v = attn.hook_q(q), attn.hook_k(k), attn.hook_v(v)
            return einops.rearrange(torch.stack((q, k, v)), "three b p h d -> b p (h three d)")
        q, k, v = fused.split((h * d, kv * d, kv * d), dim=-1)
        return torch.cat((heads(attn.hook_q, q, h), heads(attn.hook_k, k, kv), heads(attn.hook_v, v, kv)), dim=-1)

    def weights(self, attn: Attention) -> QKVWeights:
        shape = (attn.n_heads, attn.n_kv_heads, attn.d_head, self.partitions, self.order)
        return fused_qkv(attn.hf.get_submodule(self.path), self.layout, *shape)

    def projection_layout(self, attn: Attention) -> ProjectionLayout:
        h, kv, d = attn.n_heads, attn.n_kv_heads, attn.d_head
        if self.layout == "partitioned":
            counts = {"q": h, "k": kv, "v": kv}
            columns = [
                (kind, i, partition_slice(kind, i, h, kv, d, self.partitions, self.order))
                for kind in "qkv"
                for i in range(counts[kind])
            ]
            return {self.path: sorted(columns, key=lambda block: block[2].start)}  # in the module's column order
        if self.layout == "per_head":
            blocks = [
                (kind, i, slice((3 * i + j) * d, (3 * i + j + 1) * d)) for i in range(h) for j, kind in enumerate("qkv")
            ]
            return {self.path: blocks}
        starts = {"q": 0, "k": h * d, "v": (h + kv) * d}
        counts = {"q": h, "k": kv, "v": kv}
        return {
            self.path: [
                (kind, i, slice(starts[kind] + i * d, starts[kind] + (i + 1) * d))
                for kind in "qkv"
                for i in range(counts[kind])
            ]
        }


class Attention(CoreAttentionWeights, Component):
    """A self-attention layer whose core runs through the attention seam.

    Options: ``qkv`` (where q, k, v are: ``SplitQKV``/``FusedQKV``), ``out`` (the output projection's path),
    ``rotary`` (the model rotates q and k: ``hook_rot_q/k``), ``sinks`` (attention sinks: ``hook_sink_logits``),
    ``calls_attention`` (the path, relative to the attention module, of the submodule that calls the attention
    function, where that is not the attention module itself: ``"self"`` for BERT's ``BertAttention``)."""

    uses_seam = True
    #: Whether the keys and values come from another stack (``CrossAttention``: a decoder reading its encoder).
    reads_other_stack = False
    internal_hooks: tuple[str, ...] = ("hook_rot_q", "hook_rot_k", "hook_attn_scores", "hook_pattern", "hook_z")
    #: The hooks only the seam's eager path can fire (a layer with sinks adds ``hook_sink_logits`` to both).
    eager_hooks: tuple[str, ...] = ("hook_attn_scores", "hook_pattern")
    #: Whether ``hook_z`` is exactly what the output projection reads. A layer that changes ``z`` in between (an
    #: output gate per head, Qwen3-Next) sets it False: its per-head results are then not ``z @ W_O`` (the cache
    #: analysis says so instead of computing them; ``hook_result``, on the projection's input, still holds them).
    z_feeds_out_proj: bool = True

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        qkv: QKVSource,
        out: str,
        rotary: bool = False,
        sinks: bool = False,
        calls_attention: str = "",
    ) -> None:
        super().__init__(hf_module)
        #: The HF module that calls the attention function (``AttentionInterface``): ``hf_module`` itself, or its
        #: submodule at ``calls_attention`` where the projections and the attention call sit in different modules
        #: (BERT: ``attention.self`` calls it, ``attention.output.dense`` is the output projection).
        object.__setattr__(
            self, "seam_module", hf_module.get_submodule(calls_attention) if calls_attention else hf_module
        )
        self.n_heads = cfg.n_heads
        self.n_kv_heads = cfg.n_key_value_heads or cfg.n_heads
        self.d_head = cfg.d_head
        self.rotary = rotary
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        if rotary:
            self.hook_rot_q = HookPoint()
            self.hook_rot_k = HookPoint()
        self.hook_attn_scores = HookPoint()
        if sinks:
            self.hook_sink_logits = HookPoint()
            self.internal_hooks = (*type(self).internal_hooks, "hook_sink_logits")
            self.eager_hooks = (*type(self).eager_hooks, "hook_sink_logits")
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()
        self.hook_result = HookPoint(opt_in=True)
        self.seam_active = False
        self.qkv = qkv
        for attachment in qkv.attachments(self, hf_module):
            self.attach(attachment)
        object.__setattr__(self, "out_proj", hf_module.get_submodule(out))  # an HF module, not our child
        self.attach(
            ForwardOverride(
                self.out_proj,
                self._per_head_output,
                (self.hook_result,),
                when=lambda: self.hook_result.enabled,
            )
        )
        for hook in self._seam_hooks():
            hook.on_change(self._update_seam)

    def _seam_hooks(self) -> list[HookPoint]:
        return [getattr(self, name) for name in self.internal_hooks if hasattr(self, name)]

    def _update_seam(self) -> None:
        self.seam_active = any(hook.active for hook in self._seam_hooks())

    def bind(self) -> None:
        seam.set_owner(self.seam_module, self)

    def detach_all(self) -> None:
        super().detach_all()
        seam.set_owner(self.seam_module, None)

    def run_seam(self, inner: Callable, module: nn.Module, query, key, value, attention_mask, **kwargs):
        """Called by the seam for this layer while an internal hook is in use.

        query ``[b, h, q, d]``, key/value ``[b, kv, k, d]``; returns ``([b, q, h, d], weights)``.
        """
        return self._attend(inner, seam.eager_attention, module, query, key, value, attention_mask, kwargs)

    def _attend(
        self, inner: Callable, eager: Callable, module: nn.Module, query, key, value, attention_mask, kwargs: dict
    ):
        """Fire the internal hooks around ``inner``, or around ``eager`` when scores or pattern are hooked."""
        if self.rotary:
            query = self.hook_rot_q(query.transpose(1, 2)).transpose(1, 2)
            key = self.hook_rot_k(key.transpose(1, 2)).transpose(1, 2)
        if any(getattr(self, name).active for name in self.eager_hooks):
            z, weights = eager(
                module,
                query,
                key,
                value,
                attention_mask,
                on_scores=self.hook_attn_scores,
                on_pattern=self.hook_pattern,
                on_sinks=getattr(self, "hook_sink_logits", None),
                **kwargs,
            )
        else:
            z, weights = inner(module, query, key, value, attention_mask, **kwargs)
        return self.hook_z(z), weights

    def attend_with_hooks(
        self,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Any,
        core: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention core for a component whose HF module computes attention inline (not through
        ``AttentionInterface``): fires ``hook_rot_q``/``hook_rot_k`` (rotary), ``hook_attn_scores``,
        ``hook_pattern`` and ``hook_z`` around ``eager_attention`` (HF eager numerics; ``scaling=``,
        ``softcap=``, ``dropout=``, any mask form ``additive_mask`` takes).

        ``core``: the module's own attention arithmetic instead of ``eager_attention``, for modules whose numerics
        differ (GPT-J divides fp32 scores by √d): called as ``eager_attention`` is, with ``on_scores``/``on_pattern``
        (applied to the masked pre-softmax scores and to the softmax) when those hooks are in use, and ``kwargs``.

        query ``[b, n_heads, q, d]`` (after rotary), key/value ``[b, n_kv_heads, k, d]`` → ``(z [b, q, n_heads, d],
        pattern [b, n_heads, q, k])``.
        """
        core = core or seam.eager_attention
        return self._attend(core, core, module, query, key, value, attention_mask, kwargs)

    def _per_head_output(self, _original, z_flat: torch.Tensor) -> torch.Tensor:
        """The output projection split by head: fires ``hook_result`` and sums it."""
        z = einops.rearrange(z_flat, "b p (h d) -> b p h d", h=self.n_heads)
        w = einops.rearrange(weight_in_out(self.out_proj), "(h d) m -> h d m", h=self.n_heads)
        result = self.hook_result(torch.einsum("bphd,hdm->bphm", z, w))  # [b, p, h, d_model]
        out = result.sum(dim=2)
        bias = getattr(self.out_proj, "bias", None)
        return out + bias if bias is not None else out


class CrossAttention(Attention):
    """Attention whose keys and values come from another stack: an encoder-decoder's decoder reading the
    encoder's output (T5's ``EncDecAttention``, BART's and Whisper's ``encoder_attn``). Built like ``Attention``
    (``qkv``, ``out``, ``calls_attention``); its hook names sit under ``cross_attn.`` in the decoder's blocks.

    Shapes: ``hook_q`` ``[b, q_dec, n_heads, d_head]``, ``hook_k``/``hook_v`` ``[b, k_enc, n_kv_heads, d_head]``,
    ``hook_attn_scores``/``hook_pattern`` ``[b, n_heads, q_dec, k_enc]``, ``hook_z`` ``[b, q_dec, n_heads, d_head]``.
    It is never causal, whatever the HF module says: with no mask every encoder position is read. When the
    decoder runs with a KV cache, HF projects the encoder's keys and values once, on the first step, so
    ``hook_k``/``hook_v`` fire on that step only (a patch there is cached with them).
    """

    #: What the seam is told about this attention: it reads another stack (no causal mask of its own).
    reads_other_stack = True

    def run_seam(self, inner: Callable, module: nn.Module, query, key, value, attention_mask, **kwargs):
        kwargs.setdefault("is_causal", False)
        return super().run_seam(inner, module, query, key, value, attention_mask, **kwargs)
