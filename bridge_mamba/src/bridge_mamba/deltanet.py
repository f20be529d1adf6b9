"""Gated DeltaNet (Qwen3-Next's and Qwen3.5's linear attention), re-expressed step by step with hook points.

HF's layer reads ``conv1d.weight`` and calls functional code (the causal convolution, the chunked or recurrent
gated delta rule), so module hooks could never see q, k, v after the convolution, the gates or the state. While
one of its hook points is in use the HF module's forward is replaced by the same computation, built from the
functions of its own modeling file, with each hook fired in between; unhooked, HF's code runs as is. The hook
names are TransformerLens's (``GatedDeltaNetBridge``) for the same tensors; the layer's output is the block's
``hook_mixer_out``.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import einops
import torch
import torch.nn.functional as F
from torch import nn

from bridge.components import Component, ForwardOverride
from bridge.kernel import BridgeConfig, HookPoint
from bridge_mamba.recurrence import recurrent_states

HOOKS = (
    "hook_in",
    "hook_q_pre_conv",
    "hook_k_pre_conv",
    "hook_v_pre_conv",
    "hook_q",
    "hook_k",
    "hook_v",
    "hook_beta_logit",
    "hook_beta",
    "hook_log_decay",
    "hook_recurrent_state",
    "hook_recurrence_out",
    "hook_gate_input",
    "hook_inner_norm",
)


def hf_functions(module: nn.Module) -> ModuleType:
    """The modeling file that defines ``module``'s class (its convolution and delta-rule functions)."""
    return sys.modules[type(module).__module__]


class GatedDeltaNet(Component):
    """HF ``Qwen3NextGatedDeltaNet`` / ``Qwen3_5GatedDeltaNet``, under ``linear_attn``.

    ``hk``/``hv`` key and value heads (``hv`` a multiple of ``hk``: each q/k head serves ``hv/hk`` consecutive
    value heads), ``dk``/``dv`` their sizes; in computation order:

    - ``hook_in`` ``[b, p, d_model]``: the layer's input (padding positions zeroed, as HF does);
    - ``hook_q_pre_conv``/``hook_k_pre_conv`` ``[b, p, hk, dk]``, ``hook_v_pre_conv`` ``[b, p, hv, dv]``: the
      projections, before the short causal convolution mixes positions;
    - ``hook_q``/``hook_k`` ``[b, p, hk, dk]``, ``hook_v`` ``[b, p, hv, dv]``: after the convolution and its SiLU
      (before the kernel's L2 normalization of q and k and its ``dk**-0.5`` scaling of q);
    - ``hook_beta_logit``/``hook_beta`` ``[b, p, hv]``: the write strength before and after its sigmoid;
    - ``hook_log_decay`` ``[b, p, hv]``: ``g = -exp(A_log) · softplus(a + dt_bias)`` (≤ 0; the state is
      multiplied by ``exp(g)`` each step);
    - ``hook_recurrent_state`` (opt-in) ``[b, p, hv, dk, dv]``: the state after each position, ``S_t = exp(g_t)
      S_{t-1} + k_t ⊗ β_t (v_t - (exp(g_t) S_{t-1})ᵀ k_t)`` (k, q normalized), in HF's cache layout;
    - ``hook_recurrence_out`` ``[b, p, hv, dv]``: ``o_t = S_tᵀ q_t``, the recurrence's output;
    - ``hook_gate_input`` ``[b, p, hv, dv]``: z, the output gate before its SiLU;
    - ``hook_inner_norm`` ``[b, p, hv, dv]``: the gated RMSNorm ``norm(o) · SiLU(z)``, ``out_proj``'s input.

    With ``hook_recurrent_state`` in use the recurrence runs one position at a time (HF's recurrent rule) and
    ``o`` is read out from the hooked states; patching it sets states (see ``recurrence.recurrent_states``).
    """

    recurrent_state = ("hook_recurrent_state", "hook_recurrence_out")

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module)
        for name in HOOKS:
            setattr(self, name, HookPoint(opt_in=name == "hook_recurrent_state"))
        self.attach(ForwardOverride(hf_module, self._hooked_forward, tuple(getattr(self, n) for n in HOOKS)))

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(q, k, v, z, b, a)``, per head, from either HF layout (one fused qkvz projection, or four)."""
        m = self.hf
        if hasattr(m, "in_proj_qkvz"):  # Qwen3-Next: per key-head groups [q | k | v… | z…]
            q, k, v, z, b, a = m.fix_query_key_value_ordering(m.in_proj_qkvz(x), m.in_proj_ba(x))
            return q, k, v, z, b, a
        q, k, v = torch.split(m.in_proj_qkv(x), [m.key_dim, m.key_dim, m.value_dim], dim=-1)
        q, k = (einops.rearrange(t, "b p (h d) -> b p h d", d=m.head_k_dim) for t in (q, k))
        v, z = (einops.rearrange(t, "b p (h d) -> b p h d", d=m.head_v_dim) for t in (v, m.in_proj_z(x)))
        return q, k, v, z, m.in_proj_b(x), m.in_proj_a(x)

    def _hooked_forward(
        self,
        _original: Any,
        hidden_states: torch.Tensor,
        cache_params: Any = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        m, fns = self.hf, hf_functions(self.hf)
        x = self.hook_in(fns.apply_mask_to_padding_states(hidden_states, attention_mask))
        batch, seq_len, _ = x.shape
        conv_state = recurrent_state = None
        if cache_params is not None:
            conv_state = cache_params.get_conv_state(m.layer_idx, state_idx=0)
            recurrent_state = cache_params.get_recurrent_state(m.layer_idx, state_idx=0)
        q, k, v, z, b, a = self._project(x)
        q, k, v = self.hook_q_pre_conv(q), self.hook_k_pre_conv(k), self.hook_v_pre_conv(v)
        mixed = torch.cat([t.flatten(2) for t in (q, k, v)], dim=-1).transpose(1, 2)  # [b, conv_dim, p]
        mixed = self._convolve(fns, mixed, cache_params, conv_state, kwargs).transpose(1, 2)
        q, k, v = torch.split(mixed, [m.key_dim, m.key_dim, m.value_dim], dim=-1)
        q = self.hook_q(einops.rearrange(q, "b p (h d) -> b p h d", d=m.head_k_dim))
        k = self.hook_k(einops.rearrange(k, "b p (h d) -> b p h d", d=m.head_k_dim))
        v = self.hook_v(einops.rearrange(v, "b p (h d) -> b p h d", d=m.head_v_dim))
        beta = self.hook_beta(self.hook_beta_logit(b).sigmoid())
        g = self.hook_log_decay(-m.A_log.float().exp() * F.softplus(a.float() + m.dt_bias))
        decoding = recurrent_state is not None and seq_len == 1
        rule_kwargs = {"cu_seqlens": kwargs.pop("cu_seq_lens_q", None), **kwargs}
        if self.hook_recurrent_state.active:
            out, last = self._recur_with_states(fns, q, k, v, g, beta, recurrent_state)
        else:
            rule = fns.torch_recurrent_gated_delta_rule if decoding else fns.torch_chunk_gated_delta_rule
            out, last = rule(
                q,
                k,
                v,
                g=g,
                beta=beta,
                initial_state=recurrent_state,
                output_final_state=cache_params is not None,
                use_qk_l2norm_in_kernel=True,
                **rule_kwargs,
            )
        if cache_params is not None:
            cache_params.update_recurrent_state(last, m.layer_idx)
        out = self.hook_recurrence_out(out)  # [b, p, hv, dv]
        z = self.hook_gate_input(z)
        normed = m.norm(out.reshape(-1, m.head_v_dim), z.reshape(-1, m.head_v_dim))
        normed = self.hook_inner_norm(normed.reshape(batch, seq_len, -1, m.head_v_dim))
        return m.out_proj(normed.reshape(batch, seq_len, -1))

    def _convolve(
        self, fns: ModuleType, mixed: torch.Tensor, cache_params: Any, conv_state: Any, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        """HF's short causal convolution with its SiLU, ``[b, conv_dim, p]`` → same shape (cache as HF uses it)."""
        m, seq_len = self.hf, mixed.shape[-1]
        weight = m.conv1d.weight.squeeze(1)
        if conv_state is not None and seq_len == 1 and not cache_params.is_recording_past(m.layer_idx):
            return fns.causal_conv1d_update(mixed, conv_state, weight, m.conv1d.bias, m.activation)
        if cache_params is not None:
            mixed = cache_params.update_conv_state(mixed, m.layer_idx, conv_kernel_size=m.conv_kernel_size)
        out = fns.causal_conv1d_fn(mixed, weight, m.conv1d.bias, activation=m.activation, **kwargs)
        return out[:, :, -seq_len:] if cache_params is not None else out

    def _recur_with_states(
        self,
        fns: ModuleType,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        g: torch.Tensor,
        beta: torch.Tensor,
        initial: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """HF's recurrent gated delta rule one position at a time, the states through ``hook_recurrent_state``:
        ``(o [b, p, hv, dv], last state [b, hv, dk, dv])``, in float32 as HF computes it."""
        dtype, groups = q.dtype, v.shape[2] // q.shape[2]
        q, k = (t.repeat_interleave(groups, dim=2).float() for t in (q, k))  # [b, p, hv, dk]
        q = fns.l2norm(q, dim=-1, eps=1e-6) / q.shape[-1] ** 0.5
        k = fns.l2norm(k, dim=-1, eps=1e-6)
        v, g, beta = v.float(), g.float(), beta.float()

        def step(previous: torch.Tensor | None, t: int) -> torch.Tensor:
            if previous is None:
                previous = v.new_zeros(k.shape[0], k.shape[2], k.shape[3], v.shape[3])  # [b, hv, dk, dv]
            state = previous * g[:, t].exp()[..., None, None]
            remembered = (state * k[:, t, ..., None]).sum(dim=-2)  # [b, hv, dv]: what the state predicts for k_t
            delta = (v[:, t] - remembered) * beta[:, t, :, None]
            return state + k[:, t, ..., None] * delta[..., None, :]

        start = None if initial is None else initial.float()
        states = recurrent_states(
            step, q.shape[1], start, self.hook_recurrent_state, bool(self.hook_recurrent_state.bwd_hooks)
        )
        out = (states * q[..., None]).sum(dim=-2)  # [b, p, hv, dv], summed as HF's recurrent rule sums
        return out.to(dtype), states[:, -1]
