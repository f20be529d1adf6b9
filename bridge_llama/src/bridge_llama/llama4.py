"""Llama 4 (text): ``Llama4ForCausalLM``. What is special, and where its hooks sit.

- Attention: RoPE in interleaved (complex-number) pairs on RoPE layers, none on NoPE layers (``no_rope_layers``);
  an L2 norm (no weight) on q and k *after* RoPE on RoPE layers (``use_qk_norm``); on NoPE layers q is scaled by
  a per-position temperature (``attn_temperature_tuning``); RoPE layers attend within chunks
  (``attention_chunk_size``, in HF's mask). HF computes the temperature from the query's index; the bridge from
  its position (``Llama4Attention``), so left-padded rows get what they get alone. The HF attention module does
  the rest itself: ``hook_q/k/v`` sit on
  the projections and ``hook_rot_q``/``hook_rot_k`` at the seam, i.e. on the queries and keys the scores are
  computed from (after RoPE and the L2 norm, or after the temperature scale), so
  ``hook_attn_scores = hook_rot_q · hook_rot_k / √d_head + mask`` on every layer.
- MLP: MoE layers (``moe_layers``, from ``interleave_moe_layer_step``) and dense layers (``intermediate_size_mlp``
  wide). HF's MoE router returns dense sigmoid scores of the top-k logits, and each expert reads the token
  *scaled by its score* (not its output scaled): ``Llama4MoE`` is core's ``MoE`` fitted to that layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import einops
import torch
from torch import nn

from bridge import ComponentMap, Spec
from bridge.components import (
    GATED_SHARED_EXPERT,
    MLP,
    Attention,
    ForwardOverride,
    MoE,
    Norm,
    OutputTap,
    Routing,
    SequentialBlock,
)
from bridge.kernel import BridgeConfig, DenseOrMoEBlockSpec, HookPoint
from bridge_llama.adapters import LLAMA_ATTN, LLAMA_MLP, RMS, RopeAdapter


def llama4_routing(router: nn.Module, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama 4's router on logits ``[N, n_experts]``: the top ``router.top_k`` logits, their sigmoids as weights
    (computed in float32, as HF does) → ``(weights [N, k], indices [N, k])``."""
    top, indices = torch.topk(logits, router.top_k, dim=1)
    return torch.sigmoid(top.float()).to(logits.dtype), indices


class Llama4MoE(MoE):
    """Core's ``MoE`` on Llama 4's layout: the router returns ``(scores [N, n_experts], logits)`` with the
    weights scattered into zeros, and the experts module runs every expert on the tokens scaled by their scores.

    Same hooks as core's ``MoE``, with one difference of meaning: ``hook_expert_weights`` ``[b, p, k]`` scales
    each selected expert's *input* (HF's ``routed_in = x · score``). A patch to the weights or indices is
    scattered back into the score matrix HF uses (indices repeated in a token's slots: the last slot's weight
    counts). ``hook_expert_outputs`` (opt-in) ``[b, p, k, d_model]``: the output of each slot's expert on its
    scaled input; the sum over ``k`` is the routed output. The shared expert: ``mlp.shared_expert.*`` and
    ``hook_shared_expert_out``.

    Weight views follow HF's Llama 4 expert layout, ``gate_up_proj`` ``[E, d_model, 2·d_mlp]`` (gate half first)
    and ``down_proj`` ``[E, d_mlp, d_model]``: ``W_gate``, ``W_in`` ``[E, d_model, d_mlp]``, ``W_out``
    ``[E, d_mlp, d_model]``, ``W_router`` ``[d_model, E]``.
    """

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        routing: Routing = llama4_routing,
        router: str = "router",
        experts: str = "experts",
        shared_expert: str | None = "shared_expert",
    ) -> None:
        super().__init__(hf_module, cfg, routing, router, experts)
        shared_module = hf_module.get_submodule(shared_expert) if shared_expert else None
        if shared_module is not None:  # run by ``_forward`` below on [b, p, d]: its own output is the contribution
            self.shared_expert = MLP(shared_module, cfg, **GATED_SHARED_EXPERT)
            self.hook_shared_expert_out = HookPoint()
            self.attach(OutputTap(shared_module, self.hook_shared_expert_out, (self.hook_shared_expert_out,)))
        self._hidden: torch.Tensor | None = None
        self._selection: tuple[torch.Tensor, torch.Tensor] | None = None
        # The per-slot outputs need the selection, so the router's tap also runs while only they are hooked.
        route = next(a for a in self._attachments if isinstance(a, OutputTap) and a.module is self.router)
        route.hooks += (self.hook_expert_outputs,)
        self.hook_expert_outputs.on_change(route.sync)
        object.__setattr__(self, "shared_module", shared_module)
        every_hook = tuple(m for m in self.modules() if isinstance(m, HookPoint))
        self.attach(ForwardOverride(hf_module, self._forward, every_hook))

    def _forward(self, _original: Callable, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """HF's MoE forward with the shared expert run on ``[b, p, d]`` (HF runs it on ``[b·p, d]``; it is
        position-wise), so its hooks have TransformerLens shapes. hidden ``[b, p, d]`` → ``([b·p, d], logits)``."""
        x = hidden.reshape(-1, hidden.shape[-1])  # [b·p, d]
        self._hidden = x
        scores, logits = self.router(x)  # [b·p, E] each
        n_experts = scores.shape[1]
        routed_in = x.repeat(n_experts, 1) * einops.rearrange(scores, "n e -> (e n) 1")  # [E·b·p, d]
        routed = einops.reduce(self.experts(routed_in), "(e n) d -> n d", "sum", e=n_experts)
        self._hidden = self._selection = None  # kept for the per-slot outputs of this call only
        if self.shared_module is None:
            return routed, logits
        return self.shared_module(hidden).reshape(x.shape) + routed, logits

    def _route(self, out: Any) -> Any:
        scores, logits = out  # [b·p, E] each
        if self.hook_router_logits.active:
            hooked = self.hook_router_logits(self._unflatten(logits))  # [b, p, E]
            logits = hooked.reshape(-1, hooked.shape[-1]).to(logits.dtype)
        weights, indices = self.routing(self.router, logits)  # [b·p, k] each
        weights = self.hook_expert_weights(self._unflatten(weights)).flatten(0, -2)
        indices = self.hook_expert_indices(self._unflatten(indices)).flatten(0, -2)
        self._selection = (weights, indices)
        return torch.zeros_like(scores).scatter(1, indices, weights.to(scores.dtype)), logits

    def _per_slot_outputs(self, original: Callable, routed_in: torch.Tensor) -> torch.Tensor:
        """Run HF's experts once per slot (each token scaled by that slot's weight, for that slot's expert
        only), fire ``hook_expert_outputs`` ``[b, p, k, d]``, and return their sum where HF sums over experts."""
        assert self._hidden is not None and self._selection is not None
        hidden, (weights, indices) = self._hidden, self._selection
        n_experts = routed_in.shape[0] // hidden.shape[0]
        slots = []
        for j in range(indices.shape[-1]):
            scores = torch.zeros(hidden.shape[0], n_experts, dtype=hidden.dtype, device=hidden.device)
            scores = scores.scatter(1, indices[:, j : j + 1], weights[:, j : j + 1].to(hidden.dtype))  # [N, E]
            scaled = hidden.repeat(n_experts, 1) * einops.rearrange(scores, "n e -> (e n) 1")  # [E·N, d]
            slots.append(einops.reduce(original(scaled), "(e n) d -> n d", "sum", e=n_experts))
        per_slot = self.hook_expert_outputs(self._unflatten(einops.rearrange(slots, "k n d -> n k d")))
        routed = per_slot.sum(dim=-2).reshape(hidden.shape).to(routed_in.dtype)  # [N, d]
        out = torch.zeros(n_experts, *routed.shape, dtype=routed.dtype, device=routed.device)
        out[0] = routed  # HF sums the experts' rows: the routed output in expert 0's rows, zeros elsewhere
        return einops.rearrange(out, "e n d -> (e n) d")

    def _gate_up(self) -> tuple[torch.Tensor, torch.Tensor]:
        gate, up = self._expert_parameter("gate_up_proj").chunk(2, dim=-1)  # 2 × [E, d_model, d_mlp]
        return gate, up

    @property
    def W_out(self) -> torch.Tensor:
        """Per-expert output weights ``[n_experts, d_mlp, d_model]``."""
        return self._expert_parameter("down_proj")


class Llama4Attention(Attention):
    """Llama 4's attention. On NoPE layers with ``attn_temperature_tuning``, HF scales q by a temperature of the
    *index* of each query (``arange(q) + cached``), so a left-padded row is scaled as if its padding were text.
    The bridge rescales q at the seam (before ``hook_rot_q``) to the temperature of each query's *position*: the
    number of real keys it attends to, minus one, read off the attention mask (the positions ``forward`` and
    ``generate`` pass, ``cumsum(mask) - 1``). Without padding the mask is ``None`` or the ratio is exactly 1, so
    the output is HF's bit for bit; with left padding each row gets what it gets alone (HF's batched output
    differs there)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, **options: Any) -> None:
        super().__init__(hf_module, cfg, **options)
        config = getattr(hf_module, "config", None)
        layer_types = getattr(config, "layer_types", None) or []
        full = layer_types[hf_module.layer_idx] == "full_attention" if layer_types else True
        tuned = getattr(hf_module, "attn_temperature_tuning", False) and not getattr(hf_module, "use_rope", True)
        self.retempers = bool(tuned and full)
        self._update_seam()

    def _update_seam(self) -> None:
        super()._update_seam()
        if getattr(self, "retempers", False):  # the seam runs on every call: the only place q is seen
            self.seam_active = True

    def run_seam(self, inner: Callable, module: nn.Module, query, key, value, attention_mask, **kwargs):
        if self.retempers:
            query = self._retempered(module, query, key, attention_mask)
        return super().run_seam(inner, module, query, key, value, attention_mask, **kwargs)

    @staticmethod
    def _retempered(module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: Any) -> torch.Tensor:
        """query ``[b, h, q, d]`` scaled by temperature(position) / temperature(index) per query."""
        if not isinstance(mask, torch.Tensor) or mask.ndim != 4:
            return query  # no mask (nothing padded), or a form that does not show the keys: as HF
        allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2  # [b|1, 1, q, k]
        q_len, k_len = query.shape[2], key.shape[2]
        positions = (allowed.sum(-1, dtype=torch.int64) - 1).clamp(min=0)[:, :1, -q_len:]  # [b|1, 1, q]
        index = torch.arange(k_len - q_len, k_len, device=query.device)  # [q]: what HF scaled by
        ratio = _temperature(module, positions) / _temperature(module, index)  # [b|1, 1, q]
        return (query * ratio[..., None].to(query.device)).to(query.dtype)


def _temperature(module: nn.Module, positions: torch.Tensor) -> torch.Tensor:
    """HF's NoPE-layer temperature of q at ``positions`` (float32)."""
    floor = torch.floor((positions.float() + 1.0) / module.floor_scale)
    return torch.log1p(floor) * module.attn_scale + 1.0


class Llama4Block(SequentialBlock):
    """Llama 4's pre-norm block: HF's MoE returns its output flattened to ``[b·p, d_model]`` and the block views
    it as the residual's shape; so does this wiring, so ``hook_mlp_out`` is ``[b, p, d_model]``."""

    def run_mlp(self, x: torch.Tensor) -> torch.Tensor:
        return super().run_mlp(x).reshape(x.shape)


class Llama4Adapter(RopeAdapter):
    """Llama 4 text: interleaved-pair RoPE and NoPE layers, L2 q/k norm after RoPE, attention temperature on
    NoPE layers, chunked attention, MoE (sigmoid top-k router, experts read score-scaled tokens, a shared
    expert) interleaved with dense layers."""

    architectures = ("Llama4ForCausalLM",)
    model_types = ("llama4_text",)
    wiring = Llama4Block

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        out = super().config_overrides()
        out["d_mlp"] = c.intermediate_size_mlp  # the dense layers' width; experts: extra["d_mlp_expert"]
        out["gated_mlp"] = True
        out["extra"] |= {
            "rotary_adjacent_pairs": True,  # RoPE rotates (2i, 2i+1) pairs, as complex numbers
            "n_experts": c.num_local_experts,
            "experts_per_token": c.num_experts_per_tok,
            "d_mlp_expert": c.intermediate_size,
            "moe_layers": list(c.moe_layers),
            "no_rope_layers": list(c.no_rope_layers),
            "attention_chunk_size": c.attention_chunk_size,
            "use_qk_norm": c.use_qk_norm,
            "attn_temperature_tuning": c.attn_temperature_tuning,
            "floor_scale": c.floor_scale,
            "attn_scale": c.attn_scale,
        }
        return out

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        children = {
            "ln1": Spec(Norm, "input_layernorm", RMS),
            "attn": Spec(Llama4Attention, "self_attn", LLAMA_ATTN),
            "ln2": Spec(Norm, "post_attention_layernorm", RMS),
            "mlp": Spec(MLP, "feed_forward", LLAMA_MLP),
        }
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=DenseOrMoEBlockSpec(self.wiring, children, moe_mlp=Spec(Llama4MoE, "feed_forward")),
            ln_final=Spec(Norm, "norm", RMS),
            root="model",  # HF's base_model_prefix is "language_model", so base_model is the whole model
            head_unembed="lm_head",
        )
