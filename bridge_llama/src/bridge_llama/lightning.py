"""MiniMax's lightning attention (linear attention with a fixed per-head decay), re-expressed with hook points.

HF's ``MiniMaxLightningAttention`` computes everything inside its ``forward`` (a blockwise scan on a prompt, a
per-token recurrence when its cache holds a state), so module hooks could never see q, k, v or the state. While
one of its hook points is in use the HF module's forward is replaced by the same computation, op for op, with each
hook fired in between; unhooked, HF's code runs as is. The names are those of the Gated DeltaNet layers
(TransformerLens's ``GatedDeltaNetBridge``) where a tensor has the same role; the layer's output is the block's
``hook_mixer_out``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import einops
import torch
import torch.nn.functional as F
from torch import nn

from bridge.components import Component, ForwardOverride
from bridge.kernel import BridgeConfig, HookPoint

HOOKS = (
    "hook_in",
    "hook_q",
    "hook_k",
    "hook_v",
    "hook_recurrent_state",
    "hook_recurrence_out",
    "hook_gate_input",
    "hook_inner_norm",
)


class LightningAttention(Component):
    """HF ``MiniMaxLightningAttention``, under ``linear_attn``: ``h`` heads of size ``d`` (``d_k = d_v = d``), each
    with a fixed decay ``λ_h = exp(-slope_h)`` (HF's ``slope_rate``, smaller in deeper layers). In computation order:

    - ``hook_in`` ``[b, p, d_model]``: the layer's input (``ln1``'s output);
    - ``hook_q``/``hook_k``/``hook_v`` ``[b, p, h, d]``: ``SiLU(qkv_proj(x))`` split per head (padding positions
      zeroed, as HF does): what the recurrence reads, unnormalized and unscaled;
    - ``hook_recurrent_state`` (opt-in) ``[b, p, h, d_k, d_v]``: the state after each position,
      ``S_t = λ_h S_{t-1} + k_tᵀ v_t``, in HF's cache layout (``K.T @ V``);
    - ``hook_recurrence_out`` ``[b, p, h, d]``: ``o_t = q_t S_t``, before the norm;
    - ``hook_gate_input`` ``[b, p, h, d]``: ``output_gate(x)``, the output gate's logits;
    - ``hook_inner_norm`` ``[b, p, h, d]``: ``sigmoid(gate) · RMSNorm(o)`` (the norm across all heads at once):
      ``out_proj``'s input.

    Unhooked, HF's blockwise scan runs (intra-block ``(QKᵀ ∘ decay) V`` plus the carried state). With
    ``hook_recurrent_state`` in use the recurrence runs one position at a time (HF's decoding rule) and ``o`` is read
    out from the hooked states; patching it *sets* states: entries the hook changes take the new value and the
    recurrence carries them on; a backward hook on it receives the total gradient ``dL/dS_t``.
    """

    #: the per-position state hook and the hook reading it out (the conformance kit's recurrent-layer checks)
    recurrent_state = ("hook_recurrent_state", "hook_recurrence_out")

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module)
        for name in HOOKS:
            setattr(self, name, HookPoint(opt_in=name == "hook_recurrent_state"))
        self.attach(ForwardOverride(hf_module, self._hooked_forward, tuple(getattr(self, n) for n in HOOKS)))

    def _hooked_forward(
        self,
        _original: Any,
        hidden_states: torch.Tensor,
        position_embeddings: Any = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.hf
        x = self.hook_in(hidden_states)
        qkv = m.act_fn(m.qkv_proj(x))
        if attention_mask is not None:  # HF's apply_mask_to_padding_states
            qkv = (qkv * attention_mask[:, :, None]).to(qkv.dtype)
        qkv = einops.rearrange(qkv, "b p (h three d) -> three b p h d", three=3, d=m.head_dim)
        q, k, v = self.hook_q(qkv[0]), self.hook_k(qkv[1]), self.hook_v(qkv[2])  # [b, p, h, d]
        state = past_key_values.get_linear_cache(m.layer_idx) if past_key_values is not None else None
        if self.hook_recurrent_state.active:
            out, state = self._recur_with_states(q, k, v, state)
        elif state is None:
            out, state = self._blockwise(q, k, v)
        else:
            out, state = self._recurrent(q, k, v, state)
        out = self.hook_recurrence_out(out)  # [b, p, h, d]
        normed = m.norm(einops.rearrange(out, "b p h d -> b p (h d)"))
        gate = self.hook_gate_input(einops.rearrange(m.output_gate(x), "b p (h d) -> b p h d", d=m.head_dim))
        gated = F.sigmoid(einops.rearrange(gate, "b p h d -> b p (h d)")) * normed
        gated = self.hook_inner_norm(einops.rearrange(gated, "b p (h d) -> b p h d", d=m.head_dim))
        result = m.out_proj(einops.rearrange(gated, "b p h d -> b p (h d)"))
        if past_key_values is not None:
            past_key_values.set_linear_cache(m.layer_idx, state)
        return result, state

    def _blockwise(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """HF's prompt path, op for op: blocks of ``block_size`` positions, ``(o [b, p, h, d], last state)``."""
        m = self.hf
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [b, h, p, d]
        batch, heads, seq_len, d = q.shape
        state = torch.zeros(batch, heads, d, d, device=v.device, dtype=v.dtype)
        outputs = []
        for start in range(0, seq_len, m.block_size):
            end = min(start + m.block_size, seq_len)
            size = end - start
            bq, bk, bv = q[:, :, start:end], k[:, :, start:end], v[:, :, start:end]
            intra = torch.matmul(torch.matmul(bq, bk.transpose(-1, -2)) * m.diagonal_decay[:, :, :size, :size], bv)
            inter = torch.matmul(bq * m.query_decay[:, :size], state)
            outputs.append(inter + intra)
            update = torch.matmul((bk * m.key_decay[:, -size:]).transpose(-1, -2), bv)
            state = state * torch.exp(-m.slope_rate * size) + update
        return torch.cat(outputs, dim=-2).transpose(1, 2), state

    def _recurrent(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """HF's decoding path (a state in the cache), op for op, one position at a time."""
        ratio = torch.exp(-self.hf.slope_rate)  # [h, 1, 1]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [b, h, p, d]
        outputs = []
        for t in range(q.shape[2]):
            state = ratio * state + torch.matmul(k[:, :, t : t + 1].transpose(-1, -2), v[:, :, t : t + 1])
            outputs.append(torch.matmul(q[:, :, t : t + 1], state))
        return torch.cat(outputs, dim=-2).transpose(1, 2), state

    def _recur_with_states(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, initial: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrence one position at a time, every state through ``hook_recurrent_state``:
        ``(o [b, p, h, d], last state [b, h, d_k, d_v])``."""
        ratio = torch.exp(-self.hf.slope_rate)  # [h, 1, 1]

        def step(previous: torch.Tensor | None, t: int) -> torch.Tensor:
            write = einops.einsum(k[:, t], v[:, t], "b h dk, b h dv -> b h dk dv")
            return write if previous is None else ratio * previous + write

        states = set_states(
            step, q.shape[1], initial, self.hook_recurrent_state, bool(self.hook_recurrent_state.bwd_hooks)
        )
        out = einops.einsum(q, states, "b p h dk, b p h dk dv -> b p h dv")
        return out, states[:, -1]


def set_states(
    step: Callable[[torch.Tensor | None, int], torch.Tensor],
    length: int,
    initial: torch.Tensor | None,
    hook: Callable[[torch.Tensor], torch.Tensor],
    track_gradients: bool,
) -> torch.Tensor:
    """Every state ``S_t = step(S_{t-1}, t)`` for ``t < length`` (``S_{-1} = initial``), ``[b, length, *state]``,
    run through ``hook``. Entries the hook changes (in place or in the tensor it returns) are set and the later
    states are recomputed from them; with backward hooks (``track_gradients``) the recurrence runs again through the
    hook's output, so the gradient at ``S_t`` is the total one, through every later state."""

    def run(hooked: torch.Tensor | None = None, changed: torch.Tensor | None = None, clean: Any = None) -> torch.Tensor:
        states, previous = [], initial
        for t in range(length):
            state = step(previous, t)
            if hooked is not None:  # the hooked value where changed, else what the recurrence gives from it
                state = hooked[:, t] + torch.where(changed[:, t], 0.0, state - clean[:, t])
            states.append(state)
            previous = state
        return torch.stack(states, dim=1)

    states = run()
    seen = states.detach()
    if states.requires_grad:  # a non-leaf copy: a hook may patch it in place, backward hooks attach to it
        seen = seen.requires_grad_().clone()
    version = seen._version
    hooked = hook(seen)
    in_place = seen._version != version
    if hooked is seen and not in_place and not track_gradients:
        return states
    clean = states.detach()
    if in_place and not states.requires_grad:  # seen was states' own storage: recompute the pre-hook states
        clean = run().detach()
    return run(hooked, hooked != clean, clean)
