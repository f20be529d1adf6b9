"""Zamba2's shared transformer block: one attention + MLP block whose weights are reused at several depths, each
depth adding its own low-rank adapters (HF's ``linear_q_adapter_list``…, LoRA-like) to the q, k, v and gate/up
projections.

HF builds a separate module per depth (the weights tied), so each depth is hooked under its own block name
(``blocks.{i}.attn.*``, ``blocks.{i}.mlp.*``) with the projections that depth applies: ``hook_q`` is
``q_proj(x) + adapter(x)``, the adapter's part alone is ``hook_q_adapter``. HF adds the adapters inline in the
attention's and the MLP's forward, so while one of these hooks is in use the forward is re-expressed with HF's own
modules and functions (unhooked, HF's code runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import einops
import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.zamba2 import modeling_zamba2 as hf_zamba2

from bridge.components import Attention, Component, ForwardOverride, InputTap, QKVSource
from bridge.kernel import BridgeConfig, HookPoint
from bridge_mamba.hybrid_blocks import HybridLayer

_ADAPTER_HOOKS = ("hook_q_adapter", "hook_k_adapter", "hook_v_adapter")


class AdaptedQKV(QKVSource):
    """Separate q, k, v projections plus, where the config has them (``use_shared_attention_adapter``), this
    depth's adapters. Hooks on the attention: ``hook_q``/``hook_k``/``hook_v`` ``[b, p, heads, d_head]`` are the
    adapted projections (what the attention reads, before RoPE); ``hook_q_adapter``/``hook_k_adapter``/
    ``hook_v_adapter`` (same shapes) the adapters' outputs, already included in them."""

    def attachments(self, attn: Attention, hf_attn: nn.Module) -> list:
        adapted = bool(hf_attn.config.use_shared_attention_adapter)
        for name in _ADAPTER_HOOKS if adapted else ():
            setattr(attn, name, HookPoint())
        hooks = tuple(getattr(attn, n) for n in ("hook_q", "hook_k", "hook_v", *(_ADAPTER_HOOKS if adapted else ())))
        return [ForwardOverride(hf_attn, _AdaptedAttentionForward(attn, hf_attn, adapted), hooks)]


class _AdaptedAttentionForward:
    """``Zamba2Attention.forward`` with the projections split out and hooked."""

    def __init__(self, attn: Attention, hf_attn: nn.Module, adapted: bool) -> None:
        self.attn, self.hf, self.adapted = attn, hf_attn, adapted

    def project(self, x: torch.Tensor, which: str, layer_idx: int) -> torch.Tensor:
        """``{which}_proj(x)`` plus this depth's adapter, ``[b, p, heads, d_head]`` through the hooks."""
        m, attn = self.hf, self.attn
        out = einops.rearrange(getattr(m, f"{which}_proj")(x), "b p (n d) -> b p n d", d=m.head_dim)
        if self.adapted:
            adapter = getattr(m, f"linear_{which}_adapter_list")[m.layer_dic[layer_idx]]
            delta = einops.rearrange(adapter(x), "b p (n d) -> b p n d", d=m.head_dim)
            out = out + getattr(attn, f"hook_{which}_adapter")(delta)
        return getattr(attn, f"hook_{which}")(out)

    def __call__(
        self,
        _original: Callable,
        hidden_states: torch.Tensor,
        layer_idx: int,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = self.hf
        q, k, v = (self.project(hidden_states, w, layer_idx).transpose(1, 2) for w in "qkv")  # [b, n, p, d]
        if m.config.use_mem_rope:
            cos, sin = position_embeddings
            q, k = hf_zamba2.apply_rotary_pos_emb(q, k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, layer_idx)
        eager = hf_zamba2.eager_attention_forward
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(m.config._attn_implementation, eager)
        out, weights = interface(
            m,
            q,
            k,
            v,
            attention_mask,
            dropout=0.0 if not m.training else m.attention_dropout,
            scaling=m.scaling,
            **kwargs,
        )
        out = out.reshape(*hidden_states.shape[:-1], -1).contiguous()
        return m.o_proj(out), weights


class AdaptedGateUpMLP(Component):
    """``Zamba2MLP``: one fused ``[gate | up]`` projection plus this depth's adapter, GELU-gated.

    Hooks: ``hook_adapter`` ``[b, p, 2·d_mlp]`` (the adapter's output, added to ``gate_up_proj``'s), ``hook_pre``
    ``[b, p, d_mlp]`` (the adapted gate half, before the activation), ``hook_pre_linear`` ``[b, p, d_mlp]`` (the
    adapted up half), ``hook_post`` ``[b, p, d_mlp]`` (``act(gate) * up``, ``down_proj``'s input)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module)
        self.hook_adapter = HookPoint()
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()
        hooks = (self.hook_adapter, self.hook_pre, self.hook_pre_linear)
        self.attach(ForwardOverride(hf_module, self._hooked_forward, hooks))
        self.attach(InputTap(hf_module.down_proj, self.hook_post, (self.hook_post,)))

    def _hooked_forward(self, _original: Callable, hidden_state: torch.Tensor, layer_idx: int) -> torch.Tensor:
        m = self.hf
        adapter = m.gate_up_proj_adapter_list[m.layer_dic[layer_idx]]
        gate_up = m.gate_up_proj(hidden_state) + self.hook_adapter(adapter(hidden_state))
        gate, up = gate_up.chunk(2, dim=-1)  # [b, p, d_mlp] each
        return m.down_proj(m.act_fn(self.hook_pre(gate)) * self.hook_pre_linear(up))


class SharedAttentionMixerBlock(HybridLayer):
    """A Zamba2 hybrid layer: the shared transformer block, then a Mamba-2 layer whose input it shifts.

    ``shared_in = [resid_pre | embed]`` (``2·d_model``), ``attn_out = attn(shared_ln1(shared_in))``, ``mlp_out =
    mlp(shared_ln2(attn_out))`` (no residual inside the shared block), ``shared_out = linear(mlp_out)``,
    ``mixer_in = resid_pre + shared_out``, ``mixer_out = mixer(ln1(mixer_in))``, ``resid_post = resid_pre +
    mixer_out``: only the mixer writes to the residual stream; the shared block reaches it through the mixer.

    Hooks: ``hook_resid_pre``, ``hook_attn_out``, ``hook_mlp_out``, ``hook_shared_out``, ``hook_mixer_in``,
    ``hook_mixer_out``, ``hook_resid_post`` ``[b, p, d_model]``; ``hook_shared_in`` ``[b, p, 2·d_model]``.
    """

    block_hooks = (
        "hook_resid_pre",
        "hook_shared_in",
        "hook_attn_out",
        "hook_mlp_out",
        "hook_shared_out",
        "hook_mixer_in",
        "hook_mixer_out",
        "hook_resid_post",
    )
    algebra = (("hook_resid_post", ("hook_resid_pre", "hook_mixer_out")),)
    forwards_to = "mixer"
    offers_input_hooks = False
    #: The hybrid layer's arguments the shared attention takes, under its own names.
    attention_arguments: ClassVar[dict[str, str]] = {
        "attention_mask": "causal_mask",
        "past_key_values": "past_key_values",
        "position_embeddings": "position_embeddings",
        "position_ids": "position_ids",
    }

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        layer, layer_idx = self.hf_module, call_kwargs["layer_idx"]
        resid_pre = self.hook_resid_pre(hidden)
        shared_in = self.hook_shared_in(torch.cat([resid_pre, call_kwargs["original_hidden_states"]], dim=-1))
        named = set(self._signature.parameters)
        extra = {k: v for k, v in call_kwargs.items() if k not in named}
        attn_kwargs = {mine: call_kwargs.get(theirs) for mine, theirs in self.attention_arguments.items()}
        attn = self.hf_modules["attn"](self.run_norm("shared_ln1", shared_in), layer_idx, **attn_kwargs, **extra)
        attn_out = self.hook_attn_out(attn[0])
        mlp_out = self.hook_mlp_out(self.hf_modules["mlp"](self.run_norm("shared_ln2", attn_out), layer_idx))
        shared_out = self.hook_shared_out(layer.linear(mlp_out))
        mixer_in = self.hook_mixer_in(resid_pre + shared_out)
        mixer_out = self.hook_mixer_out(self.run_mixer("mixer", self.run_norm("ln1", mixer_in), call_kwargs))
        return self.hook_resid_post(resid_pre + mixer_out)
