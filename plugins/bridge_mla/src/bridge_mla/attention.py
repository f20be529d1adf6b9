"""Multi-head latent attention (DeepSeek-V2/V3) on core's attention seam.

HF's MLA modules call the attention interface with the full per-head query/key ``[b, h, p, qk_nope +
qk_rope]`` (the rope part rotated) and value ``[b, h, p, v_head_dim]``, so core's ``Attention`` provides
``hook_rot_q/k``, scores, pattern, ``hook_z`` and ``hook_result`` unchanged. This component adds what MLA
has on top of it:

- ``hook_q`` ``[b, p, h, qk_nope + qk_rope]``: the output of ``q_proj``/``q_b_proj`` (pre-rotary);
- ``hook_k`` ``[b, p, h, qk_nope + qk_rope]``: per head ``[k_nope | k_rope]``, pre-rotary, where the rope
  part is the one shared rope key. HF never materialises it; while it is hooked, the HF module's forward
  is re-expressed (same submodules, same rotary function) so a patch, even a per-head one of the rope
  part, is rotated and used. Not available with a KV cache (the cache holds latents);
- ``hook_v`` ``[b, p, h, v_head_dim]``: the value part of ``kv_b_proj``'s output;
- ``hook_q_latent`` ``[b, p, q_lora_rank]`` (q-LoRA models): after ``q_a_layernorm``;
- ``hook_kv_latent`` ``[b, p, kv_lora_rank]``: after ``kv_a_layernorm``; every head's key and value
  are computed from it by ``kv_b_proj``;
- ``hook_k_rope`` ``[b, p, qk_rope]``: the shared rope key from ``kv_a_proj_with_mqa``, pre-rotary.

Weight views: ``W_O`` ``[n_heads, d_head_v, d_model]`` and ``b_O`` as everywhere; ``W_Q`` ``[n_heads, d_model,
d_head]`` only without q-LoRA (with it, q passes a norm). Keys and values come from a normed latent, so there is
no ``W_K``/``W_V`` (nor ``QK``/``OV``); the linear maps MLA does have are ``W_Q_a`` ``[d_model, q_lora_rank]``,
``W_Q_b`` ``[n_heads, q_lora_rank, d_head]``, ``W_KV_a`` ``[d_model, kv_lora_rank]``, ``W_K_rope`` ``[d_model,
qk_rope]`` (the shared rope key), ``W_K_b`` ``[n_heads, kv_lora_rank, qk_nope]`` and ``W_V_b`` ``[n_heads,
kv_lora_rank, d_head_v]`` (the per-head up-projections of the normed latent), with biases ``b_Q_a``, ``b_KV_a``,
``b_K_rope`` (zeros without ``attention_bias``; HF's up-projections have none).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import einops
import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from bridge import BridgeError
from bridge.components import (
    Attention,
    ForwardOverride,
    OutputTap,
    QKVSource,
    WeightViewError,
    heads,
    linear_bias,
    linear_in_out,
)
from bridge.kernel import BridgeConfig, HookPoint

#: ``rotate(hf_attn, q_rope [b, h, p, r], k_rope [b, h, p, r], position_embeddings) -> (q_rope, k_rope)``
Rotate = Callable[[nn.Module, torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor]]


def _modeling(hf_attn: nn.Module) -> Any:
    """The HF modeling module that defines ``hf_attn``'s class (its own rotary and eager functions)."""
    return sys.modules[type(hf_attn).__module__]


def rotate_complex(hf_attn: nn.Module, q: torch.Tensor, k: torch.Tensor, freqs_cis: Any):
    """DeepSeek-V2: HF's complex-frequency rotary (``apply_rotary_emb``), on interleaved pairs."""
    return _modeling(hf_attn).apply_rotary_emb(q, k, freqs_cis.to(q.device))


def rotate_cos_sin(hf_attn: nn.Module, q: torch.Tensor, k: torch.Tensor, cos_sin: Any):
    """DeepSeek-V3: HF's ``apply_rotary_pos_emb_interleave`` (``rope_interleave``) or ``apply_rotary_pos_emb``."""
    modeling, (cos, sin) = _modeling(hf_attn), cos_sin
    if hf_attn.config.rope_interleave:
        return modeling.apply_rotary_pos_emb_interleave(q, k, cos, sin)
    return modeling.apply_rotary_pos_emb(q, k, cos, sin)


class _MLAProjections(QKVSource):
    """Where MLA's q and v can be seen without touching the HF forward (``hook_k`` needs more)."""

    def attachments(self, attn: Attention, hf_attn: nn.Module) -> list:
        q_proj = hf_attn.q_proj if hf_attn.q_lora_rank is None else hf_attn.q_b_proj
        return [
            OutputTap(q_proj, lambda x: heads(attn.hook_q, x, attn.n_heads), (attn.hook_q,)),
            OutputTap(hf_attn.kv_b_proj, attn.fire_v, (attn.hook_v,)),
        ]


class MLAAttention(Attention):
    """DeepSeek's multi-head latent attention: core's seam plus MLA's projections and latents."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, rotate: Rotate, out: str = "o_proj") -> None:
        super().__init__(hf_module, cfg, qkv=_MLAProjections(), out=out, rotary=True)
        self.rotate = rotate
        self.nope, self.rope = hf_module.qk_nope_head_dim, hf_module.qk_rope_head_dim
        self.d_v, self.kv_rank = hf_module.v_head_dim, hf_module.kv_lora_rank
        if hf_module.q_lora_rank is not None:
            self.hook_q_latent = HookPoint()
            self.attach(OutputTap(hf_module.q_a_layernorm, self.hook_q_latent, (self.hook_q_latent,)))
        self.hook_kv_latent = HookPoint()
        self.attach(OutputTap(hf_module.kv_a_layernorm, self.hook_kv_latent, (self.hook_kv_latent,)))
        self.hook_k_rope = HookPoint()
        self.attach(OutputTap(hf_module.kv_a_proj_with_mqa, self._fire_k_rope, (self.hook_k_rope,)))
        self.attach(ForwardOverride(hf_module, self._forward_with_hook_k, (self.hook_k,)))

    # ---------------------------------------------------------------- weight views

    def _no_linear(self, view: str) -> WeightViewError:
        q_side = "W_Q_a, W_Q_b" if self.hf_module.q_lora_rank is not None else "W_Q"
        return WeightViewError(
            f"{self._layer_label()} is multi-head latent attention: keys and values are computed from a normed "
            f"latent, so there is no linear {view}. Its linear maps are {q_side}, W_KV_a [d_model, kv_lora_rank], "
            "W_K_rope [d_model, qk_rope], W_K_b [n_heads, kv_lora_rank, qk_nope], W_V_b [n_heads, kv_lora_rank, "
            "d_head_v], W_O and b_O."
        )

    @property
    def W_Q(self) -> torch.Tensor:
        """``[n_heads, d_model, d_head]`` (models without q-LoRA only)."""
        if self.hf_module.q_lora_rank is not None:
            raise WeightViewError(
                f"{self._layer_label()} projects queries through a normed latent (q-LoRA), so there is no linear "
                "W_Q; use W_Q_a [d_model, q_lora_rank] and W_Q_b [n_heads, q_lora_rank, d_head]"
            )
        return einops.rearrange(linear_in_out(self.hf_module.q_proj), "m (h d) -> h m d", h=self.n_heads)

    @property
    def b_Q(self) -> torch.Tensor:
        """``[n_heads, d_head]`` (models without q-LoRA only; zeros when ``q_proj`` has no bias)."""
        w_q = self.W_Q
        bias = linear_bias(self.hf_module.q_proj)
        if bias is None:
            return torch.zeros(w_q.shape[0], w_q.shape[-1], dtype=w_q.dtype, device=w_q.device)
        return einops.rearrange(bias, "(h d) -> h d", h=self.n_heads)

    @property
    def _W_K(self) -> torch.Tensor:
        raise self._no_linear("W_K")

    @property
    def _W_V(self) -> torch.Tensor:
        raise self._no_linear("W_V")

    @property
    def _b_K(self) -> torch.Tensor:
        raise self._no_linear("b_K")

    @property
    def _b_V(self) -> torch.Tensor:
        raise self._no_linear("b_V")

    @property
    def W_Q_a(self) -> torch.Tensor:
        """q-LoRA down-projection ``[d_model, q_lora_rank]`` (before ``q_a_layernorm``)."""
        if self.hf_module.q_lora_rank is None:
            raise WeightViewError(f"{self._layer_label()} has no q-LoRA (q_lora_rank is None); use W_Q")
        return linear_in_out(self.hf_module.q_a_proj)

    @property
    def W_Q_b(self) -> torch.Tensor:
        """q-LoRA up-projection per head ``[n_heads, q_lora_rank, d_head]`` (after ``q_a_layernorm``)."""
        if self.hf_module.q_lora_rank is None:
            raise WeightViewError(f"{self._layer_label()} has no q-LoRA (q_lora_rank is None); use W_Q")
        return einops.rearrange(linear_in_out(self.hf_module.q_b_proj), "r (h d) -> h r d", h=self.n_heads)

    @property
    def W_KV_a(self) -> torch.Tensor:
        """Down-projection to the key/value latent ``[d_model, kv_lora_rank]`` (before ``kv_a_layernorm``)."""
        return linear_in_out(self.hf_module.kv_a_proj_with_mqa)[:, : self.kv_rank]

    @property
    def W_K_rope(self) -> torch.Tensor:
        """The shared rope key's projection ``[d_model, qk_rope]`` (pre-rotary; one for all heads)."""
        return linear_in_out(self.hf_module.kv_a_proj_with_mqa)[:, self.kv_rank :]

    def _bias_of(self, module: nn.Module, columns: slice) -> torch.Tensor:
        bias = linear_bias(module)
        if bias is not None:
            return bias[columns]
        weight = linear_in_out(module)[:, columns]
        return torch.zeros(weight.shape[-1], dtype=weight.dtype, device=weight.device)

    @property
    def b_Q_a(self) -> torch.Tensor:
        """``[q_lora_rank]`` (zeros without ``attention_bias``)."""
        _ = self.W_Q_a  # raises without q-LoRA
        return self._bias_of(self.hf_module.q_a_proj, slice(None))

    @property
    def b_KV_a(self) -> torch.Tensor:
        """``[kv_lora_rank]`` (zeros without ``attention_bias``)."""
        return self._bias_of(self.hf_module.kv_a_proj_with_mqa, slice(None, self.kv_rank))

    @property
    def b_K_rope(self) -> torch.Tensor:
        """``[qk_rope]`` (zeros without ``attention_bias``)."""
        return self._bias_of(self.hf_module.kv_a_proj_with_mqa, slice(self.kv_rank, None))

    def _kv_b(self) -> tuple[torch.Tensor, torch.Tensor]:
        per_head = einops.rearrange(linear_in_out(self.hf_module.kv_b_proj), "r (h d) -> h r d", h=self.n_heads)
        return per_head.split([self.nope, self.d_v], dim=-1)  # [h, kv_rank, nope], [h, kv_rank, d_v]

    @property
    def W_K_b(self) -> torch.Tensor:
        """Per-head key up-projection of the normed latent ``[n_heads, kv_lora_rank, qk_nope]`` (the no-rope part)."""
        return self._kv_b()[0]

    @property
    def W_V_b(self) -> torch.Tensor:
        """Per-head value up-projection of the normed latent ``[n_heads, kv_lora_rank, d_head_v]``."""
        return self._kv_b()[1]

    def fire_v(self, kv: torch.Tensor) -> torch.Tensor:
        """``kv_b_proj``'s output (``[b, p, h·(nope + v)]``, or ``[b, 1, p, …]`` as HF calls it): fire ``hook_v``."""
        per_head = kv.reshape(kv.shape[0], kv.shape[-2], self.n_heads, self.nope + self.d_v)  # [b, p, h, nope+v]
        k_nope, v = per_head.split([self.nope, self.d_v], dim=-1)
        return torch.cat([k_nope, self.hook_v(v)], dim=-1).reshape(kv.shape)

    def _fire_k_rope(self, compressed: torch.Tensor) -> torch.Tensor:
        """``kv_a_proj_with_mqa``'s output ``[b, p, kv_rank + rope]``: fire ``hook_k_rope`` on the rope part."""
        latent, k_rope = compressed.split([self.kv_rank, self.rope], dim=-1)
        return torch.cat([latent, self.hook_k_rope(k_rope)], dim=-1)

    def _forward_with_hook_k(
        self,
        _original: Callable,
        hidden_states: torch.Tensor,
        *,
        position_embeddings: Any,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """HF's MLA forward with the pre-rotary per-head key materialised for ``hook_k``."""
        if past_key_values is not None:
            raise BridgeError(
                f"{self.hook_k.name} is not available with a KV cache (MLA caches latents, not per-head keys); "
                "hook rot_k, kv_latent or k_rope instead, or run without a cache."
            )
        hf = self.hf_module
        if hf.q_lora_rank is None:
            q = hf.q_proj(hidden_states)
        else:
            q = hf.q_b_proj(hf.q_a_layernorm(hf.q_a_proj(hidden_states)))
        q = einops.rearrange(q, "b p (h d) -> b h p d", h=self.n_heads)
        q_nope, q_rope = q.split([self.nope, self.rope], dim=-1)
        latent, k_rope = hf.kv_a_proj_with_mqa(hidden_states).split([self.kv_rank, self.rope], dim=-1)
        kv = einops.rearrange(hf.kv_b_proj(hf.kv_a_layernorm(latent)), "b p (h d) -> b p h d", h=self.n_heads)
        k_nope, value = kv.split([self.nope, self.d_v], dim=-1)
        shared = einops.repeat(k_rope, "b p r -> b p h r", h=self.n_heads)
        key = self.hook_k(torch.cat([k_nope, shared], dim=-1))  # [b, p, h, nope + rope]
        key = einops.rearrange(key, "b p h d -> b h p d")
        k_nope, k_rope = key.split([self.nope, self.rope], dim=-1)
        q_rope, k_rope = self.rotate(hf, q_rope, k_rope, position_embeddings)
        query = torch.cat([q_nope, q_rope], dim=-1)
        key = torch.cat([k_nope, k_rope], dim=-1)
        value = einops.rearrange(value, "b p h d -> b h p d")
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            hf.config._attn_implementation, _modeling(hf).eager_attention_forward
        )
        out, weights = interface(
            hf,
            query,
            key,
            value,
            attention_mask,
            dropout=hf.attention_dropout if hf.training else 0.0,
            scaling=hf.scaling,
            **kwargs,
        )
        return hf.o_proj(einops.rearrange(out, "b p h d -> b p (h d)")), weights
