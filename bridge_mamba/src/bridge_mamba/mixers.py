"""The SSM mixers of Mamba and Mamba-2, re-expressed step by step with hook points.

HF's mixers read ``conv1d.weight`` and ``dt_proj.weight`` directly and call functional code
(the causal convolution, the selective scan), so module hooks alone would never see the
convolution, Δ or the scan. While a mixer hook point that needs it is in use, the HF mixer's
forward is replaced by the computation of HF's pure-torch ("slow") path, built from HF's own
functions with the activations split out where a hook sits; unhooked, HF's code runs as is.
Hooks on a module's output (``hook_in_proj``, ``hook_x_proj``, ``hook_inner_norm``, and ``hook_ssm_out``,
the mixer's own output) are plain output taps and need no override.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import einops
import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.mamba import modeling_mamba as hf_mamba
from transformers.models.mamba2 import modeling_mamba2 as hf_mamba2

from bridge.components import Component, ForwardOverride, OutputTap
from bridge.kernel import BridgeConfig, BridgeError, HookPoint, PlainActivationCache

if TYPE_CHECKING:
    from bridge.kernel import HookedModel


def scan_states(
    decay: torch.Tensor,
    inputs: torch.Tensor,
    initial: torch.Tensor | None,
    hook: Callable[[torch.Tensor], torch.Tensor],
    track_gradients: bool = False,
) -> torch.Tensor:
    """Every state of ``h_t = decay_t * h_{t-1} + inputs_t`` (``h_{-1} = initial``, or 0), run through ``hook``.

    ``inputs`` is ``[b, p, *state]``, ``decay`` broadcasts against it, ``initial`` is ``[b, *state]``.
    The hook sees all states at once. Entries it changes (in place, or in the tensor it returns) are
    *set*: the recurrence carries them on to the later positions, whose unchanged entries are
    recomputed from them. When the hook patches, or with ``track_gradients`` (backward hooks), the
    recurrence is run again through the hook's output, so that the gradient it receives at ``h_t``
    is the total one, through every later state; parameters get their gradient from that second
    run only.
    """

    dtype = torch.promote_types(decay.dtype, inputs.dtype)

    def run(hooked: torch.Tensor | None = None, changed: torch.Tensor | None = None) -> torch.Tensor:
        if hooked is None and not _needs_graph(decay, inputs, initial):
            return _recur_in_place(decay, inputs, initial, dtype)
        states, h = [], initial
        for t in range(inputs.shape[1]):
            step = inputs[:, t].to(dtype) if h is None else decay[:, t] * h + inputs[:, t]
            if hooked is not None:  # hooked value, plus whatever the recurrence adds to unchanged entries
                step = hooked[:, t] + torch.where(changed[:, t], 0.0, step - values[:, t])
            states.append(step)
            h = step
        return torch.stack(states, dim=1)

    states = run()
    seen = states.detach()
    if states.requires_grad:  # a non-leaf copy: hooks may patch it in place, backward hooks attach to it
        seen = seen.requires_grad_().clone()
    version = seen._version
    hooked = hook(seen)
    in_place = seen._version != version
    if hooked is seen and not in_place and not track_gradients:
        return states
    values = run().detach() if in_place and not states.requires_grad else states.detach()  # pre-hook states
    return run(hooked, hooked != values)


def _needs_graph(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _recur_in_place(
    decay: torch.Tensor, inputs: torch.Tensor, initial: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """The same recurrence without autograd, written into one preallocated ``[b, p, *state]`` buffer."""
    states = torch.empty(torch.broadcast_shapes(decay.shape, inputs.shape), dtype=dtype, device=inputs.device)
    previous = initial
    for t in range(inputs.shape[1]):
        if previous is None:
            states[:, t] = inputs[:, t]
        else:
            torch.addcmul(inputs[:, t], decay[:, t], previous, out=states[:, t])
        previous = states[:, t]
    return states


def _conv_without_activation(
    mixer: nn.Module,
    x: torch.Tensor,
    cache_params: Any,
    conv_state: torch.Tensor | None,
    module: Any,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """HF's causal depthwise convolution, activation left out; ``x`` ``[b, channels, p]`` → same shape.

    Decoding one token updates HF's conv state (``causal_conv1d_update``); otherwise the cache (if any)
    supplies the left context and the output is trimmed to the sequence, exactly as HF does.
    """
    seq_len = x.shape[-1]
    weight = mixer.conv1d.weight.squeeze(1)
    if conv_state is not None and seq_len == 1 and not cache_params.is_recording_past(mixer.layer_idx):
        return module.causal_conv1d_update(x, conv_state, weight, mixer.conv1d.bias, activation=None)
    if cache_params is not None:
        x = cache_params.update_conv_state(x, mixer.layer_idx, conv_kernel_size=mixer.conv_kernel_size)
    out = module.causal_conv1d_fn(x, weight, mixer.conv1d.bias, activation=None, **kwargs)
    return out[:, :, -seq_len:] if cache_params is not None else out


def _cached_states(cache_params: Any, layer_idx: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if cache_params is None:
        return None, None
    return (
        cache_params.get_conv_state(layer_idx, state_idx=0),
        cache_params.get_recurrent_state(layer_idx, state_idx=0),
    )


def _store_state(
    cache_params: Any, recurrent_state: torch.Tensor | None, decoding: bool, last: torch.Tensor, layer_idx: int
) -> None:
    """Write the last state where HF writes it: in place while decoding, else through the cache."""
    if decoding:
        recurrent_state.copy_(last.to(recurrent_state.dtype))
    elif cache_params is not None:
        cache_params.update_recurrent_state(last, layer_idx)


class _SSMMixer(Component):
    """Shared plumbing: output taps for hooks on module outputs, one override for the rest.

    ``hook_ssm_out`` ``[b, p, d_model]`` is the mixer's output (after ``out_proj``): what the block adds to
    the residual stream. In a hybrid's block (``output_hook=False``) that tensor is the block's ``hook_mixer_out``
    instead, and the mixer has no ``hook_ssm_out`` (one tensor, one name).

    ``recurrent_state``: ``(state hook, read-out hook)``, the opt-in per-position state and the hook that reads
    it out at the same position (``hook_y``); the conformance kit's state checks find recurrent layers by it."""

    #: Hook points fired by the re-expressed forward (the rest are output taps).
    override_hooks: tuple[str, ...] = ()
    recurrent_state = ("hook_ssm_state", "hook_y")

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, taps: dict[str, str], output_hook: bool = True) -> None:
        super().__init__(hf_module)
        for name, path in {**taps, **({"hook_ssm_out": ""} if output_hook else {})}.items():
            hook = HookPoint()
            setattr(self, name, hook)
            self.attach(OutputTap(hf_module.get_submodule(path), hook, (hook,)))
        for name in self.override_hooks:
            setattr(self, name, HookPoint(opt_in=name == "hook_ssm_state"))
        hooks = tuple(getattr(self, name) for name in self.override_hooks)
        self.attach(ForwardOverride(hf_module, self._hooked_forward, hooks))

    def _hooked_forward(self, _original, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    def _cached(self, cache: PlainActivationCache, *hooks: HookPoint) -> list[torch.Tensor]:
        missing = [h.name for h in hooks if h.name not in cache]
        if missing:
            raise BridgeError(
                f"effective_attention needs {missing} in the cache; run `run_with_cache` with "
                f"names_filter including {[h.name for h in hooks]}."
            )
        return [cache[h.name].float() for h in hooks]

    @property
    def _track_state_gradients(self) -> bool:
        return bool(self.hook_ssm_state.bwd_hooks)


class Mamba1Mixer(_SSMMixer):
    """HF ``MambaMixer`` (selective scan, per-channel Δ). ``d`` = ``d_inner``, ``n`` = ``d_state``.

    - ``hook_in_proj`` ``[b, p, 2·d]``: ``in_proj`` output, ``[x | gate]`` (pre-activation);
    - ``hook_conv`` ``[b, p, d]``: causal depthwise conv of x, trimmed to the sequence, before SiLU;
    - ``hook_ssm_in`` ``[b, p, d]``: ``u = SiLU(conv)`` (padding masked), the SSM input;
    - ``hook_x_proj`` ``[b, p, dt_rank + 2·n]``: ``x_proj(u)`` = ``[Δ low-rank | B | C]``;
    - ``hook_dt_proj`` ``[b, p, d]``: ``dt_proj(Δ low-rank)`` (bias included), before softplus;
    - ``hook_dt`` ``[b, p, d]``: ``Δ = softplus(hook_dt_proj)``;
    - ``hook_ssm_state`` (opt-in) ``[b, p, d, n]``: the state after each position;
    - ``hook_y`` ``[b, p, d]``: ``y = C·h + D·u``, before gating;
    - ``hook_gate`` ``[b, p, d]``: ``SiLU(gate)``; ``out_proj`` receives ``y * gate``.

    Mixers that RMS-normalize Δ, B and C after ``x_proj`` (Falcon-Mamba, Jamba: ``dt_layernorm``,
    ``b_layernorm``, ``c_layernorm``) also have, between ``hook_x_proj`` and ``hook_dt_proj``:

    - ``hook_dt_in`` ``[b, p, dt_rank]``: the normalized low-rank Δ, ``dt_proj``'s input;
    - ``hook_B``, ``hook_C`` ``[b, p, n]``: the normalized B and C, what the scan reads.
    """

    base_hooks = ("hook_conv", "hook_ssm_in", "hook_dt_proj", "hook_dt", "hook_ssm_state", "hook_y", "hook_gate")
    norm_hooks = ("hook_dt_in", "hook_B", "hook_C")

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, output_hook: bool = True) -> None:
        self.normed = all(hasattr(hf_module, f"{x}_layernorm") for x in ("dt", "b", "c"))
        self.override_hooks = (
            (*self.base_hooks[:2], *self.norm_hooks, *self.base_hooks[2:]) if self.normed else (self.base_hooks)
        )
        super().__init__(hf_module, cfg, {"hook_in_proj": "in_proj", "hook_x_proj": "x_proj"}, output_hook)

    def _hooked_forward(
        self,
        _original,
        hidden_states: torch.Tensor,
        cache_params: Any = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        m = self.hf
        seq_len, dtype = hidden_states.shape[1], hidden_states.dtype
        conv_state, recurrent_state = _cached_states(cache_params, m.layer_idx)
        decoding = recurrent_state is not None and seq_len == 1
        hidden_states = hf_mamba.apply_mask_to_padding_states(hidden_states, attention_mask)
        x, gate = m.in_proj(hidden_states).chunk(2, dim=-1)  # [b, p, d] each
        conv = _conv_without_activation(m, x.transpose(1, 2), cache_params, conv_state, hf_mamba, kwargs)
        conv = self.hook_conv(conv.transpose(1, 2))  # [b, p, d]
        u = self.hook_ssm_in(hf_mamba.apply_mask_to_padding_states(m.act(conv), attention_mask))
        n = m.ssm_state_size
        time_step, B, C = torch.split(m.x_proj(u), [m.time_step_rank, n, n], dim=-1)  # B, C: [b, p, n]
        if self.normed:
            time_step = self.hook_dt_in(m.dt_layernorm(time_step))  # [b, p, dt_rank]
            B, C = self.hook_B(m.b_layernorm(B)), self.hook_C(m.c_layernorm(C))
        time_step = m.dt_proj.weight @ time_step.transpose(1, 2)  # [b, d, p], as HF computes it
        if m.dt_proj.bias is not None:
            time_step = time_step + m.dt_proj.bias.float().to(time_step.dtype)[:, None]
        dt_proj = self.hook_dt_proj(time_step.transpose(1, 2))  # [b, p, d]
        dt = self.hook_dt(F.softplus(dt_proj))  # [b, p, d]
        A = -torch.exp(m.A_log.float())  # [d, n]
        if self.hook_ssm_state.active:
            initial = recurrent_state if decoding else None  # HF's full-sequence scan starts from zero
            decay = torch.exp(A * dt[..., None])  # [b, p, d, n]
            inputs = dt[..., None] * B[:, :, None, :].float() * u[..., None].float()
            states = scan_states(decay, inputs, initial, self.hook_ssm_state, self._track_state_gradients)
            _store_state(cache_params, recurrent_state, decoding, states[:, -1], m.layer_idx)
            y = einops.einsum(states.to(u.dtype), C, "b p d n, b p n -> b p d")
            y = y + u * (m.D if decoding else m.D.float())
        elif decoding:
            y = hf_mamba.mamba_selective_state_update(
                recurrent_state, u[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], m.D, z=None
            )[:, None]
        else:
            result = hf_mamba.mamba_selective_scan(
                u.transpose(1, 2),
                dt.transpose(1, 2),
                A,
                B.transpose(1, 2),
                C.transpose(1, 2),
                D=m.D.float(),
                z=None,
                return_last_state=cache_params is not None,
                use_mambapy=m.use_mambapy,
                use_associative_scan=m.use_associative_scan,
            )
            if cache_params is not None:
                result, final_state = result
                cache_params.update_recurrent_state(final_state, m.layer_idx)
            y = result.transpose(1, 2)  # [b, p, d]
        y = self.hook_y(y)
        gated = y * self.hook_gate(F.silu(gate))
        return m.out_proj(gated.to(dtype))

    def effective_attention(self, cache: PlainActivationCache) -> torch.Tensor:
        """The hidden attention of each channel, ``[b, d_inner, p, p]``, lower-triangular.

        ``M[c, t, s] = Σ_n C_t[n] · exp(A[c, n] · Σ_{k=s+1..t} Δ_k[c]) · Δ_s[c] · B_s[n]``, so that
        ``hook_y[t, c] = Σ_s M[c, t, s] · hook_ssm_in[s, c] + D[c] · hook_ssm_in[t, c]``
        (for a forward pass that starts from a zero state). Needs ``hook_dt`` and ``hook_x_proj``.
        """
        m = self.hf
        dt, x_dbl = self._cached(cache, self.hook_dt, self.hook_x_proj)  # [b, p, d], [b, p, r + 2n]
        n = m.ssm_state_size
        _, B, C = torch.split(x_dbl, [m.time_step_rank, n, n], dim=-1)  # [b, p, n]
        A = -torch.exp(m.A_log.float())  # [d, n]
        batch, seq_len, channels = dt.shape
        M = dt.new_zeros(batch, channels, seq_len, seq_len)
        for k in range(n):
            log_decay = einops.rearrange(dt * A[:, k], "b p d -> b d p")
            decay = torch.exp(hf_mamba2.segment_sum(log_decay))  # [b, d, t, s], 0 above the diagonal
            M = M + decay * einops.einsum(C[..., k], B[..., k], "b t, b s -> b t s")[:, None]
        return M * einops.rearrange(dt, "b s d -> b d 1 s")


class Mamba2Mixer(_SSMMixer):
    """HF ``Mamba2Mixer`` (structured state-space duality, per-head scalar decay).

    ``h`` = SSM heads, ``d`` = ``head_dim``, ``g`` = groups of B/C, ``n`` = ``d_state``:

    - ``hook_in_proj`` ``[b, p, h·d + (h·d + 2·g·n) + h]``: ``in_proj`` output, ``[gate | xBC | dt]``;
    - ``hook_conv`` ``[b, p, h·d + 2·g·n]``: causal depthwise conv of xBC, trimmed, before SiLU;
    - ``hook_ssm_in`` ``[b, p, h, d]``: ``x`` after SiLU (padding masked), per head;
    - ``hook_B``, ``hook_C`` ``[b, p, g, n]``: B and C after SiLU (padding masked), per group;
    - ``hook_dt`` ``[b, p, h]``: ``Δ = softplus(dt + dt_bias)``, clamped to ``time_step_limit``;
    - ``hook_ssm_state`` (opt-in) ``[b, p, h, d, n]``: the state after each position;
    - ``hook_y`` ``[b, p, h, d]``: ``y = C·h + D·x``, before gating;
    - ``hook_gate`` ``[b, p, h·d]``: ``SiLU(gate)`` (float32, as HF computes it);
    - ``hook_inner_norm`` ``[b, p, h·d]``: the gated RMSNorm's output ``norm(y * gate)``, ``out_proj``'s input.

    HF fuses the gate into its norm module; the re-expressed forward computes that norm itself.
    """

    override_hooks = (
        "hook_conv",
        "hook_ssm_in",
        "hook_B",
        "hook_C",
        "hook_dt",
        "hook_ssm_state",
        "hook_y",
        "hook_gate",
    )

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, output_hook: bool = True) -> None:
        super().__init__(hf_module, cfg, {"hook_in_proj": "in_proj", "hook_inner_norm": "norm"}, output_hook)

    def _hooked_forward(
        self,
        _original,
        hidden_states: torch.Tensor,
        cache_params: Any = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        m = self.hf
        seq_len, dtype = hidden_states.shape[1], hidden_states.dtype
        conv_state, recurrent_state = _cached_states(cache_params, m.layer_idx)
        decoding = recurrent_state is not None and seq_len == 1
        hidden_states = hf_mamba2.apply_mask_to_padding_states(hidden_states, attention_mask)
        gate, xBC, dt = self._project(hidden_states).split([m.intermediate_size, m.conv_dim, m.num_heads], dim=-1)
        conv = _conv_without_activation(m, xBC.transpose(1, 2), cache_params, conv_state, hf_mamba2, kwargs)
        conv = self.hook_conv(conv.transpose(1, 2))  # [b, p, conv_dim]
        xBC = hf_mamba2.apply_mask_to_padding_states(m.act(conv), attention_mask)
        gn = m.n_groups * m.ssm_state_size
        x, B, C = torch.split(xBC, [m.intermediate_size, gn, gn], dim=-1)
        x = self.hook_ssm_in(einops.rearrange(x, "b p (h d) -> b p h d", d=m.head_dim))
        B = self.hook_B(einops.rearrange(B, "b p (g n) -> b p g n", g=m.n_groups))
        C = self.hook_C(einops.rearrange(C, "b p (g n) -> b p g n", g=m.n_groups))
        dt = F.softplus(dt + m.dt_bias.to(dt.dtype))  # [b, p, h]
        if not decoding:  # HF clamps Δ on the chunked path only
            dt = torch.clamp(dt, min=m.time_step_limit[0], max=m.time_step_limit[1])
        dt = self.hook_dt(dt)
        A = -torch.exp(m.A_log.float())  # [h]
        if self.hook_ssm_state.active:
            y = self._scan_with_states(x, dt, A, B, C, cache_params, recurrent_state, decoding)
        elif decoding:
            d, n = m.head_dim, m.ssm_state_size
            y = hf_mamba2.mamba2_selective_state_update(
                recurrent_state,
                x[:, 0],
                dt[:, 0, :, None].expand(-1, -1, d),
                A[:, None, None].expand(-1, d, n),
                B[:, 0],
                C[:, 0],
                m.D[:, None].expand(-1, d),
                z=None,
                **kwargs,
            )[:, None]
        else:
            result = hf_mamba2.mamba2_chunk_scan(
                x,
                dt,
                A,
                B,
                C,
                chunk_size=m.chunk_size,
                D=m.D,
                initial_states=recurrent_state,
                dt_limit=m.time_step_limit,
                return_final_states=cache_params is not None,
                **kwargs,
            )
            if cache_params is not None:
                result, final_state = result
                cache_params.update_recurrent_state(final_state, layer_idx=m.layer_idx)
            y = result  # [b, p, h, d]
        y = self.hook_y(y)
        gate = self.hook_gate(F.silu(gate.float()))
        return m.out_proj(self._gated_output(einops.rearrange(y, "b p h d -> b p (h d)"), gate).to(dtype))

    def _project(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``in_proj``'s output ``[gate | xBC | Δ raw]``, as the HF mixer computes it from its input."""
        return self.hf.in_proj(hidden_states)

    def _gated_output(self, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """``out_proj``'s input from ``y`` ``[b, p, h·d]`` and ``SiLU(gate)``: the gated norm, ``hook_inner_norm``."""
        return self.hook_inner_norm(self._gated_norm(y, gate))

    def _gated_norm(self, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """HF's ``MambaRMSNormGated.forward`` with ``SiLU(gate)`` given, so ``hook_gate`` sits in between.

        (When only ``hook_inner_norm`` is in use, HF's module runs and an output tap fires it.)
        """
        norm = self.hf.norm
        groups = einops.rearrange(y.float() * gate, "... (g s) -> ... g s", s=norm.group_size)
        groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * einops.rearrange(groups, "... g s -> ... (g s)").to(y.dtype)

    def _scan_with_states(
        self,
        x: torch.Tensor,
        dt: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        cache_params: Any,
        recurrent_state: torch.Tensor | None,
        decoding: bool,
    ) -> torch.Tensor:
        """The recurrence, one position at a time, firing ``hook_ssm_state``; ``y`` ``[b, p, h, d]``."""
        m = self.hf
        heads_per_group = m.num_heads // m.n_groups
        B = B.repeat_interleave(heads_per_group, dim=2)[:, :, :, None, :]  # [b, p, h, 1, n]
        C = C.repeat_interleave(heads_per_group, dim=2)  # [b, p, h, n]
        decay = torch.exp(dt.float() * A)[..., None, None]  # [b, p, h, 1, 1]
        if decoding:  # as HF's selective_state_update: Δ·B·x in the model's dtype, states read out in it
            inputs = dt[..., None, None] * B * x[..., None]  # [b, 1, h, d, n]
        else:  # as HF's chunked scan: float32 throughout
            inputs = (x.float() * dt.float()[..., None])[..., None] * B.float()
        initial = None if recurrent_state is None else recurrent_state.float()
        states = scan_states(decay, inputs, initial, self.hook_ssm_state, self._track_state_gradients)
        _store_state(cache_params, recurrent_state, decoding, states[:, -1], m.layer_idx)
        if decoding:
            y = einops.einsum(states.to(C.dtype), C, "b p h d n, b p h n -> b p h d") + x * m.D[:, None]
            return y.to(x.dtype)
        return einops.einsum(states, C.float(), "b p h d n, b p h n -> b p h d") + x.float() * m.D[:, None]

    def effective_attention(self, cache: PlainActivationCache) -> torch.Tensor:
        """The SSD attention matrix of each head, ``[b, n_heads, p, p]``, lower-triangular.

        ``M[h, t, s] = exp(A_h · Σ_{k=s+1..t} Δ_k[h]) · (C_t · B_s) · Δ_s[h]`` (``L ∘ C Bᵀ``, with the
        input's discretization Δ_s folded in), so that ``hook_y[t, h] = Σ_s M[h, t, s] ·
        hook_ssm_in[s, h] + D_h · hook_ssm_in[t, h]`` for a pass from a zero state.
        Needs ``hook_dt``, ``hook_B`` and ``hook_C``.
        """
        m = self.hf
        dt, B, C = self._cached(cache, self.hook_dt, self.hook_B, self.hook_C)  # [b, p, h], [b, p, g, n] x2
        heads_per_group = m.num_heads // m.n_groups
        B = B.repeat_interleave(heads_per_group, dim=2)  # [b, p, h, n]
        C = C.repeat_interleave(heads_per_group, dim=2)
        A = -torch.exp(m.A_log.float())  # [h]
        decay = torch.exp(hf_mamba2.segment_sum(einops.rearrange(dt * A, "b p h -> b h p")))  # [b, h, t, s]
        scores = einops.einsum(C, B, "b t h n, b s h n -> b h t s")
        return decay * scores * einops.rearrange(dt, "b s h -> b h 1 s")


class FalconH1Mixer(Mamba2Mixer):
    """HF ``FalconH1Mixer``: Mamba-2 with Falcon-H1's multipliers. Its input is scaled by ``ssm_in_multiplier`` and
    ``in_proj``'s output by the per-channel ``mup_vector`` (``hook_in_proj`` is before that vector, the taps after it:
    ``hook_conv``, ``hook_dt``… see what the scan reads). Where ``mamba_rms_norm`` is off the output is
    ``y · SiLU(gate)`` with no norm (and no ``hook_inner_norm``); where it is on, the gated norm normalizes before
    gating unless ``mamba_norm_before_gate`` is off."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, output_hook: bool = True) -> None:
        taps = {"hook_in_proj": "in_proj"} | ({"hook_inner_norm": "norm"} if hf_module.mamba_rms_norm else {})
        _SSMMixer.__init__(self, hf_module, cfg, taps, output_hook)

    def _project(self, hidden_states: torch.Tensor) -> torch.Tensor:
        m = self.hf
        return m.in_proj(hidden_states * m.ssm_in_multiplier) * m.mup_vector

    def _gated_output(self, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        norm = self.hf.norm
        if not self.hf.mamba_rms_norm:
            return y * gate
        if not norm.norm_before_gate:
            y = y * gate
        groups = einops.rearrange(y.float(), "... (g s) -> ... g s", g=norm.n_groups)
        groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        normed = einops.rearrange(norm.weight, "(g s) -> g s", g=norm.n_groups) * groups
        normed = einops.rearrange(normed, "... g s -> ... (g s)")
        if norm.norm_before_gate:
            normed = normed * gate
        return self.hook_inner_norm(normed.to(y.dtype))


def effective_attention(cache: PlainActivationCache, layer: int, model: HookedModel | None = None) -> torch.Tensor:
    """The effective attention of block ``layer``'s mixer: ``[b, heads (Mamba-2) or channels (Mamba-1), p, p]``.

    ``cache`` comes from ``model.run_with_cache`` and must hold the layer's ``hook_dt`` and
    ``hook_B``/``hook_C`` (Mamba-2) or ``hook_x_proj`` (Mamba-1). ``model`` is the bridge that made
    the cache (default: ``cache.model``, for caches that keep theirs). See
    ``Mamba1Mixer.effective_attention`` and ``Mamba2Mixer.effective_attention`` for the formulas.
    """
    model = model if model is not None else getattr(cache, "model", None)
    if model is None:
        raise BridgeError("pass the bridge that produced the cache: effective_attention(cache, layer, model)")
    mixer = getattr(model.blocks[layer], "mixer", None)
    if not isinstance(mixer, _SSMMixer):
        raise BridgeError(f"block {layer} of {model.cfg.architecture} has no SSM mixer")
    return mixer.effective_attention(cache)
