"""Components for image towers that run on every image's patches at once, flattened to ``[n_patches_total, d]``
with no batch axis (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): their hook points see ``[1, n_patches_total, …]``, one row
holding every image's patches in the order HF keeps them, and attention runs per image (or per window) inside it.

- ``FlatOutput`` / ``FlatInput``: a hook point on an HF module's output / first input ``[n, d]``, as ``[1, n, d]``
  (``field``: an attribute of an output object, e.g. the tower's ``pooler_output``).
- ``FlatTokensBlock``: the pre-norm block wiring on ``[1, n, d]`` around HF's block on ``[n, d]``.
- ``SegmentAttention``: attention over the flattened patches, each segment (an image, or a window of one)
  attending within itself (``cu_seqlens``), with 2-D rotary positions; every hook ``[1, n, …]`` and the pattern
  ``[1, n_heads, n, n]`` block-diagonal (other segments' keys hold the dtype's minimum in the scores, 0 after
  the softmax).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, ClassVar

import einops
import torch
from torch import nn

from bridge.components import Attention, Component, ForwardOverride, FusedQKV, InputTap, OutputTap, SequentialBlock
from bridge.kernel import BridgeConfig, HookPoint, eager_attention, inner_attention


def _flat(hook: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``hook`` on ``[n, d]`` seen as ``[1, n, d]``."""
    return lambda x: hook(x[None])[0]


class FlatOutput(Component):
    """``hook`` ``[1, n, d]`` on an HF module's output ``[n, d]`` (``field``: that attribute of its output object,
    replaced by the hook's result)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint, field: str | None = None) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        self.field = field
        self.attach(OutputTap(hf_module, self._fire, (hook,)))

    def _fire(self, out: Any) -> Any:
        if self.field is None:
            return self.hook(out[None])[0]
        setattr(out, self.field, self.hook(getattr(out, self.field)[None])[0])
        return out


class FlatInput(Component):
    """``hook`` ``[1, n, d]`` on an HF module's first input ``[n, d]``."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        self.attach(InputTap(hf_module, _flat(hook), (hook,)))


class FlatTokensBlock(SequentialBlock):
    """Pre-norm block (``mid = pre + attn(ln1(pre))``, ``post = mid + mlp(ln2(mid))``) of a tower whose HF block
    takes ``[n, d]``: the wiring runs on ``[1, n, d]`` (the attention module is given ``[n, d]``), and any hook of
    the block, its norms or its MLP switches it on, so every hook sees ``[1, n, …]`` whichever others are active.
    The opt-in per-head input hooks are not offered."""

    wire_for_children: ClassVar[tuple[str, ...]] = ("ln1", "ln2", "mlp")
    offers_input_hooks = False

    def forward_with_hooks(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hidden, call_kwargs = self.split_call(args, kwargs)
        return self.wire(hidden[None], call_kwargs)[0]  # [n, d] -> [1, n, d] -> [n, d]

    def run_attention(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        out, weights = super().run_attention(x[0], call_kwargs)
        return out[None], weights


class SegmentAttention(Attention):
    """Qwen-VL's vision attention (``qkv`` fused as ``[q | k | v]``, output ``proj``), re-expressed while any of its
    hooks is in use: ``hook_q/k/v`` ``[1, n, n_heads, d_head]`` before the 2-D rotary, ``hook_rot_q/k`` after it (the
    HF module's own ``apply_rotary_pos_emb_vision``), then attention within each segment of ``cu_seqlens`` (an
    image, or a window of one): the implementation the model had, segment by segment as HF calls it, or, while
    ``hook_attn_scores``/``hook_pattern`` is hooked, eager attention over all patches at once with the other
    segments masked, so the pattern is ``[1, n_heads, n, n]`` and block-diagonal; ``hook_z`` ``[1, n, n_heads,
    d_head]``; ``proj`` on ``[1, n, d]`` (``hook_result`` opt-in)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module, cfg, qkv=_UnhookedFusedQKV("qkv"), out="proj", rotary=True)
        hooks = tuple(getattr(self, name) for name in ("hook_q", "hook_k", "hook_v", *self.internal_hooks))
        self.attach(ForwardOverride(hf_module, self._segment_forward, (*hooks, self.hook_result)))
        self._rotate = sys.modules[type(hf_module).__module__].apply_rotary_pos_emb_vision

    def _segment_forward(
        self,
        _original: Callable[..., Any],
        hidden_states: torch.Tensor,
        cu_seqlens: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        max_seqlen: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        hf = self.hf_module
        q, k, v = einops.rearrange(hf.qkv(hidden_states), "n (three h d) -> three 1 n h d", three=3, h=self.n_heads)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        cos, sin = position_embeddings
        q, k = self._rotate(q[0], k[0], cos, sin)  # [n, h, d]
        q, k = self.hook_rot_q(q[None]), self.hook_rot_k(k[None])
        query, key, value = (einops.rearrange(t, "1 n h d -> 1 h n d") for t in (q, k, v))
        dropout = 0.0 if not hf.training else hf.attention_dropout
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
        if any(getattr(self, name).active for name in self.eager_hooks):
            z, _ = eager_attention(
                hf,
                query,
                key,
                value,
                segment_mask(lengths, query),
                scaling=hf.scaling,
                dropout=dropout,
                on_scores=self.hook_attn_scores,
                on_pattern=self.hook_pattern,
            )
        else:
            inner = inner_attention(hf)
            splits = [torch.split(t, lengths, dim=2) for t in (query, key, value)]
            outputs = [
                inner(hf, qs, ks, vs, attention_mask=None, scaling=hf.scaling, dropout=dropout, is_causal=False)[0]
                for qs, ks, vs in zip(*splits, strict=True)
            ]
            z = torch.cat(outputs, dim=1)  # [1, n, h, d]
        z = self.hook_z(z)
        return hf.proj(einops.rearrange(z, "1 n h d -> 1 n (h d)"))[0]


class _UnhookedFusedQKV(FusedQKV):
    """``[q | k | v]`` weights for the weight views; the hooks are fired by ``SegmentAttention`` itself."""

    def attachments(self, attn: Attention, hf_attn: nn.Module) -> list:
        return []

    def projection_layout(self, attn: Attention) -> None:
        return None


def segment_mask(lengths: list[int], like: torch.Tensor) -> torch.Tensor:
    """The additive mask ``[n, n]`` letting each position attend within its segment only (``lengths`` sum to
    ``n``): 0 inside, the dtype's minimum elsewhere."""
    segment = torch.repeat_interleave(torch.arange(len(lengths), device=like.device), torch.tensor(lengths))
    allowed = segment[:, None] == segment[None, :]
    mask = torch.full(allowed.shape, torch.finfo(like.dtype).min, dtype=like.dtype, device=like.device)
    return mask.masked_fill(allowed, 0.0)
