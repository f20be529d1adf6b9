"""Adapters of hybrid models whose layers mix attention with Mamba layers. Data only.

Each layer's kind is read from the HF config (``layer_types``, which HF derives from ``layers_block_type``,
``attn_layer_indices``, ``hybrid_override_pattern``…) and becomes ``cfg.layer_types``; a ``PerLayerBlockSpec``
builds each layer from the spec of its kind. Attention layers get core's ``Attention`` (every attention hook,
through the seam), Mamba layers this family's mixers, MLPs and MoEs core's components.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import (
    MLP,
    Attention,
    GateUpMLP,
    MoE,
    Norm,
    QKNormAttention,
    ScaledEmbedding,
    SplitQKV,
    sigmoid_group_topk,
    softmax_then_topk,
    topk_then_softmax,
)
from bridge.kernel import BridgeConfig, ComponentMapError, DenseOrMoEBlockSpec, PerLayerBlockSpec
from bridge_mamba.deltanet import GatedDeltaNet
from bridge_mamba.falcon_h1 import ScaledGateMLP
from bridge_mamba.gated_attention import GatedQuery
from bridge_mamba.hybrid_blocks import (
    AttentionMLPBlock,
    AttentionOnlyBlock,
    ConvMLPBlock,
    LinearAttentionMLPBlock,
    MixerMLPBlock,
    MixerOnlyBlock,
    MLPOnlyBlock,
    PairAttentionMLPBlock,
    PairMixerMLPBlock,
    ParallelMixerBlock,
    ScaledAttentionBlock,
    ScaledMixerBlock,
)
from bridge_mamba.mixers import FalconH1Mixer, Mamba1Mixer, Mamba2Mixer
from bridge_mamba.short_conv import ShortConv
from bridge_mamba.zamba2 import AdaptedGateUpMLP, AdaptedQKV, SharedAttentionMixerBlock

RMS = {"kind": "RMS"}
ONE_PLUS_RMS = {"kind": "RMS", "weight_offset": 1.0}  # scales by (1 + w)
GATED_MLP = {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"}


def rope_parameters(hf_config: Any) -> dict[str, Any]:
    """The config's RoPE parameters (``rope_theta``, ``partial_rotary_factor``…)."""
    return dict(getattr(hf_config, "rope_parameters", None) or {})


def layer_kinds(hf_config: Any, names: Mapping[str, str], field: str = "layer_types") -> list[str]:
    """The bridge's kind of each layer (``cfg.layer_types``), from the HF config's per-layer list ``field``
    through ``names`` (HF's name → the bridge's kind); a name ``names`` lacks raises ``ComponentMapError``."""
    hf_kinds = list(getattr(hf_config, field, None) or [])
    if not hf_kinds:
        raise ComponentMapError(f"{type(hf_config).__name__} has no {field}: cannot tell its layers' kinds")
    unknown = sorted(set(hf_kinds) - set(names))
    if unknown:
        raise ComponentMapError(
            f"{type(hf_config).__name__}.{field} has layer kinds {unknown} this adapter does not know "
            f"(it knows {sorted(names)})"
        )
    return [names[kind] for kind in hf_kinds]


class HybridAdapter(Adapter):
    """What the attention/Mamba hybrids share: layer kinds from the config, one block spec per kind."""

    #: HF's per-layer kind (``config.layer_types``) → the bridge's kind (``cfg.layer_types``)
    kinds: ClassVar[dict[str, str]] = {"full_attention": "attention", "linear_attention": "mamba"}

    def layer_types(self) -> list[str]:
        return layer_kinds(self.hf_config, self.kinds)

    def hybrid_overrides(self) -> dict[str, Any]:
        return {"layer_types": self.layer_types(), "normalization_type": "RMS"}

    def block_specs(self, cfg: BridgeConfig) -> dict[str, BlockSpec]:
        raise NotImplementedError

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        raise NotImplementedError

    def per_layer(self, cfg: BridgeConfig) -> PerLayerBlockSpec:
        return PerLayerBlockSpec(tuple(cfg.layer_types or self.layer_types()), self.block_specs(cfg))


class JambaAdapter(HybridAdapter):
    """Jamba (``JambaForCausalLM``): Mamba-1 layers (with RMS-normed Δ, B, C) and attention layers without
    positional encoding, each followed by an MLP that is a MoE on some layers (``layers_num_experts``)."""

    architectures = ("JambaForCausalLM",)
    model_types = ("jamba",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            **self.hybrid_overrides(),
            "positional_embedding_type": "none",
            "gated_mlp": True,
            "extra": {
                "d_inner": c.mamba_expand * c.hidden_size,
                "d_state": c.mamba_d_state,
                "d_conv": c.mamba_d_conv,
                "dt_rank": int(c.mamba_dt_rank),
                "n_experts": c.num_experts,
                "experts_per_token": c.num_experts_per_tok,
                "layers_num_experts": list(c.layers_num_experts),
            },
        }

    def block_specs(self, cfg: BridgeConfig) -> dict[str, BlockSpec]:
        norms = {"ln1": Spec(Norm, "input_layernorm", RMS), "ln2": Spec(Norm, "pre_ff_layernorm", RMS)}
        mlp = Spec(MLP, "feed_forward", GATED_MLP)
        moe = Spec(MoE, "feed_forward", {"routing": softmax_then_topk(normalize=False), "router": "router"})
        attention = Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "o_proj", "rotary": False})
        mixer = Spec(Mamba1Mixer, "mamba", {"output_hook": False})
        return {
            "attention": DenseOrMoEBlockSpec(AttentionMLPBlock, {**norms, "attn": attention, "mlp": mlp}, moe_mlp=moe),
            "mamba": DenseOrMoEBlockSpec(MixerMLPBlock, {**norms, "mixer": mixer, "mlp": mlp}, moe_mlp=moe),
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=self.per_layer(cfg),
            ln_final=Spec(Norm, "final_layernorm", RMS),
        )


class BambaAdapter(HybridAdapter):
    """Bamba (``BambaForCausalLM``): Mamba-2 layers and attention layers (partial RoPE) at the config's
    ``attn_layer_indices``, each followed by a gated MLP; HF's layers return ``(hidden, attention weights)``."""

    architectures = ("BambaForCausalLM",)
    model_types = ("bamba",)
    kinds: ClassVar[dict[str, str]] = {"full_attention": "attention", "linear_attention": "mamba2"}

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        rope = rope_parameters(c)
        d_head = c.hidden_size // c.num_attention_heads
        return {
            **self.hybrid_overrides(),
            "d_head": d_head,
            "positional_embedding_type": "rotary",
            "rotary_dim": int(d_head * rope.get("partial_rotary_factor", 1.0)),
            "gated_mlp": True,
            "extra": {
                "rope_theta": rope.get("rope_theta"),
                "d_inner": c.mamba_n_heads * c.mamba_d_head,
                "ssm_heads": c.mamba_n_heads,
                "ssm_head_dim": c.mamba_d_head,
                "d_state": c.mamba_d_state,
                "d_conv": c.mamba_d_conv,
                "n_groups": c.mamba_n_groups,
                "chunk_size": c.mamba_chunk_size,
            },
        }

    def block_specs(self, cfg: BridgeConfig) -> dict[str, BlockSpec]:
        norms = {"ln1": Spec(Norm, "input_layernorm", RMS), "ln2": Spec(Norm, "pre_ff_layernorm", RMS)}
        mlp = Spec(MLP, "feed_forward", GATED_MLP)
        attention = Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "o_proj", "rotary": True})
        mixer = Spec(Mamba2Mixer, "mamba", {"output_hook": False})
        return {
            "attention": BlockSpec(PairAttentionMLPBlock, {**norms, "attn": attention, "mlp": mlp}),
            "mamba2": BlockSpec(PairMixerMLPBlock, {**norms, "mixer": mixer, "mlp": mlp}),
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=self.per_layer(cfg),
            ln_final=Spec(Norm, "final_layernorm", RMS),
        )


class GraniteMoeHybridAdapter(HybridAdapter):
    """Granite 4 (``GraniteMoeHybridForCausalLM``): Mamba-2 layers and attention layers (RoPE or none, by
    ``position_embedding_type``; ``attention_multiplier`` as the score scale), each followed by a MoE (top-k
    logits, then a softmax over them) plus an always-on shared MLP, both reading ``ln2``; Granite's multipliers:
    ``hook_embed`` is after ``embedding_multiplier``, every write (``hook_attn_out``/``hook_mixer_out``,
    ``hook_mlp_out``) after ``residual_multiplier``, and HF divides the logits by ``logits_scaling``."""

    architectures = ("GraniteMoeHybridForCausalLM",)
    model_types = ("granitemoehybrid",)
    kinds: ClassVar[dict[str, str]] = {"full_attention": "attention", "linear_attention": "mamba2"}

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        rope = rope_parameters(c)
        rotary = c.position_embedding_type == "rope"
        return {
            **self.hybrid_overrides(),
            "positional_embedding_type": "rotary" if rotary else "none",
            "rotary_dim": c.hidden_size // c.num_attention_heads if rotary else None,
            "gated_mlp": True,
            "d_mlp": c.shared_intermediate_size,
            "extra": {
                "rope_theta": rope.get("rope_theta") if rotary else None,
                "embedding_multiplier": c.embedding_multiplier,
                "residual_multiplier": c.residual_multiplier,
                "attention_multiplier": c.attention_multiplier,
                "logits_scaling": c.logits_scaling,
                "logit_scale": 1.0 / c.logits_scaling,  # in W_U/b_U, so that ln_final(resid) @ W_U + b_U is the logits
                "d_inner": int(c.mamba_expand * c.hidden_size),
                "ssm_heads": c.mamba_n_heads,
                "ssm_head_dim": c.mamba_d_head,
                "d_state": c.mamba_d_state,
                "n_groups": c.mamba_n_groups,
                "n_experts": c.num_local_experts,
                "experts_per_token": c.num_experts_per_tok,
            },
        }

    def block_specs(self, cfg: BridgeConfig) -> dict[str, BlockSpec]:
        norms = {"ln1": Spec(Norm, "input_layernorm", RMS), "ln2": Spec(Norm, "post_attention_layernorm", RMS)}
        shared = Spec(GateUpMLP, "shared_mlp", {"fused": "input_linear", "out": "output_linear"})
        if self.hf_config.num_local_experts:
            moe = {"routing": topk_then_softmax(), "router": "router", "experts": "experts"}
            mlps = {"mlp": Spec(MoE, "block_sparse_moe", moe), "shared_mlp": shared}
        else:
            mlps = {"mlp": shared}
        rotary = cfg.positional_embedding_type == "rotary"
        attention = Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "o_proj", "rotary": rotary})
        mixer = Spec(Mamba2Mixer, "mamba", {"output_hook": False})
        return {
            "attention": BlockSpec(ScaledAttentionBlock, {**norms, "attn": attention, **mlps}),
            "mamba2": BlockSpec(ScaledMixerBlock, {**norms, "mixer": mixer, **mlps}),
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        embed = Spec(ScaledEmbedding, "", {"embed": "embed_tokens", "first_layer": "layers.0"})
        return ComponentMap(
            blocks="layers",
            block=self.per_layer(cfg),
            ln_final=Spec(Norm, "norm", RMS),
            hooks={"hook_embed": embed},
        )


class NemotronHAdapter(HybridAdapter):
    """Nemotron-H (``NemotronHForCausalLM``): one sublayer per layer, Mamba-2, attention (no positional
    encoding), a ReLU² MLP or a MoE (sigmoid group-limited routing, a shared expert), each read through the
    layer's one RMSNorm (``ln1`` before a token mixer, ``ln2`` before an MLP): ``post = pre + sublayer(norm(pre))``.
    The layer kinds come from ``layers_block_type`` (or the older ``hybrid_override_pattern``)."""

    architectures = ("NemotronHForCausalLM",)
    model_types = ("nemotron_h",)
    kinds: ClassVar[dict[str, str]] = {
        "full_attention": "attention",
        "linear_attention": "mamba2",
        "mlp": "mlp",
        "moe": "moe",
    }

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            **self.hybrid_overrides(),
            "n_layers": len(c.layer_types),
            "d_head": c.head_dim,
            "act_fn": c.mlp_hidden_act,
            "positional_embedding_type": "none",
            "extra": {
                "d_inner": c.mamba_num_heads * c.mamba_head_dim,
                "ssm_heads": c.mamba_num_heads,
                "ssm_head_dim": c.mamba_head_dim,
                "d_state": c.ssm_state_size,
                "d_conv": c.conv_kernel,
                "n_groups": c.n_groups,
                "chunk_size": c.chunk_size,
                "n_experts": c.n_routed_experts,
                "experts_per_token": c.num_experts_per_tok,
                "d_expert": c.moe_intermediate_size,
            },
        }

    def block_specs(self, cfg: BridgeConfig) -> dict[str, BlockSpec]:
        norm = Spec(Norm, "norm", RMS)
        relu2_mlp = {"pre": "up_proj", "out": "down_proj"}
        moe = {
            "routing": sigmoid_group_topk,
            "router": "gate",
            "experts": "experts",
            "shared": Spec(MLP, "shared_experts", relu2_mlp),
        }
        attention = Spec(Attention, "mixer", {"qkv": SplitQKV(), "out": "o_proj", "rotary": False})
        return {
            "attention": BlockSpec(AttentionOnlyBlock, {"ln1": norm, "attn": attention}),
            "mamba2": BlockSpec(
                MixerOnlyBlock, {"ln1": norm, "mixer": Spec(Mamba2Mixer, "mixer", {"output_hook": False})}
            ),
            "mlp": BlockSpec(MLPOnlyBlock, {"ln2": norm, "mlp": Spec(MLP, "mixer", relu2_mlp)}),
            "moe": BlockSpec(MLPOnlyBlock, {"ln2": norm, "mlp": Spec(MoE, "mixer", moe)}),
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return ComponentMap(
            embed="embeddings",
            blocks="layers",
            block=self.per_layer(cfg),
            ln_final=Spec(Norm, "norm_f", RMS),
        )


class Qwen3NextAdapter(HybridAdapter):
    """Qwen3-Next (``Qwen3NextForCausalLM``): Gated DeltaNet linear-attention layers (``linear_attn``) and gated
    full-attention layers (q/k norms, partial RoPE, a sigmoid output gate per head: ``attn.hook_gate``), each
    followed by a MoE with a gated shared expert (dense MLPs on ``mlp_only_layers``); ``(1 + w)`` RMSNorms."""

    architectures = ("Qwen3NextForCausalLM",)
    model_types = ("qwen3_next",)
    kinds: ClassVar[dict[str, str]] = {"full_attention": "attention", "linear_attention": "gated_deltanet"}

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        rope = rope_parameters(c)
        return {
            **self.hybrid_overrides(),
            "d_head": c.head_dim,
            "positional_embedding_type": "rotary",
            "rotary_dim": int(c.head_dim * rope.get("partial_rotary_factor", 1.0)),
            "gated_mlp": True,
            "extra": {
                "rope_theta": rope.get("rope_theta"),
                "linear_num_key_heads": c.linear_num_key_heads,
                "linear_num_value_heads": c.linear_num_value_heads,
                "linear_key_head_dim": c.linear_key_head_dim,
                "linear_value_head_dim": c.linear_value_head_dim,
                "linear_conv_kernel_dim": c.linear_conv_kernel_dim,
                **self.moe_extra(),
            },
        }

    def moe_extra(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            "n_experts": c.num_experts,
            "experts_per_token": c.num_experts_per_tok,
            "d_expert": c.moe_intermediate_size,
        }

    def mlp_specs(self) -> tuple[Spec, Spec | None]:
        """The dense MLP's spec, and the MoE's (``None``: every layer is dense)."""
        routing = softmax_then_topk(normalize=bool(getattr(self.hf_config, "norm_topk_prob", True)))
        moe = {
            "routing": routing,
            "router": "gate",
            "experts": "experts",
            "shared_expert": "shared_expert",
            "shared_expert_gate": "shared_expert_gate",
        }
        return Spec(MLP, "mlp", GATED_MLP), Spec(MoE, "mlp", moe)

    def block_specs(self, cfg: BridgeConfig) -> dict[str, BlockSpec]:
        norms = {
            "ln1": Spec(Norm, "input_layernorm", ONE_PLUS_RMS),
            "ln2": Spec(Norm, "post_attention_layernorm", ONE_PLUS_RMS),
        }
        attention = Spec(QKNormAttention, "self_attn", {"qkv": GatedQuery(), "out": "o_proj", "norm_layout": "bphd"})
        mlp, moe = self.mlp_specs()
        attention_children = {**norms, "attn": attention, "mlp": mlp}
        linear_children = {**norms, "linear_attn": Spec(GatedDeltaNet, "linear_attn"), "mlp": mlp}
        return {
            "attention": DenseOrMoEBlockSpec(AttentionMLPBlock, attention_children, moe_mlp=moe),
            "gated_deltanet": DenseOrMoEBlockSpec(LinearAttentionMLPBlock, linear_children, moe_mlp=moe),
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=self.per_layer(cfg),
            ln_final=Spec(Norm, "norm", ONE_PLUS_RMS),
        )


class Qwen35Adapter(Qwen3NextAdapter):
    """Qwen3.5's language model (``Qwen3_5ForCausalLM``, text only): Qwen3-Next's layers (Gated DeltaNet with
    separate q/k/v, z, b, a projections; gated attention) with a dense gated MLP on every layer."""

    architectures = ("Qwen3_5ForCausalLM",)
    model_types = ("qwen3_5_text",)

    def moe_extra(self) -> dict[str, Any]:
        return {}

    def mlp_specs(self) -> tuple[Spec, Spec | None]:
        return Spec(MLP, "mlp", GATED_MLP), None


class Qwen35MoeAdapter(Qwen3NextAdapter):
    """Qwen3.5-MoE's language model (``Qwen3_5MoeForCausalLM``, text only): Qwen3-Next's layers, a MoE with a
    gated shared expert on every layer (top-k of a softmax, renormalized)."""

    architectures = ("Qwen3_5MoeForCausalLM",)
    model_types = ("qwen3_5_moe_text",)


def biased_sigmoid_topk(router: nn.Module, logits: torch.Tensor, expert_bias: torch.Tensor | None):
    """LFM2-MoE's routing: sigmoid scores; experts chosen by score (+ the MoE block's ``expert_bias`` when it uses
    one); weights are the scores, renormalized if ``norm_topk_prob``, times ``routed_scaling_factor``."""
    scores = logits.sigmoid()
    if expert_bias is not None:
        indices = torch.topk(scores + expert_bias, k=router.top_k, dim=-1)[1]
        weights = torch.gather(scores, dim=1, index=indices).type_as(logits)
    else:
        weights, indices = torch.topk(scores, k=router.top_k, dim=-1)
    if router.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-6)
    return weights * router.routed_scaling_factor, indices


class BiasedSigmoidMoE(MoE):
    """Core's ``MoE`` on LFM2-MoE's block, whose expert-choice bias lives on the block, not on its router."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module, cfg, routing=self.route, router="gate", experts="experts")

    def route(self, router: nn.Module, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bias = self.hf.expert_bias if self.hf.use_expert_bias else None
        return biased_sigmoid_topk(router, logits, bias)


class Lfm2Adapter(HybridAdapter):
    """LFM2 (``Lfm2ForCausalLM``): gated short-convolution layers (``mixer``, see ``ShortConv``) and attention
    layers (q/k norms, RoPE), each followed by a gated MLP (``w1``/``w3``/``w2``); the final norm is HF's
    ``embedding_norm``."""

    architectures = ("Lfm2ForCausalLM",)
    model_types = ("lfm2",)
    kinds: ClassVar[dict[str, str]] = {"full_attention": "attention", "conv": "short_conv"}
    mlp_options: ClassVar[dict[str, str]] = {"pre": "w1", "pre_linear": "w3", "out": "w2"}

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        rope = rope_parameters(c)
        return {
            **self.hybrid_overrides(),
            "positional_embedding_type": "rotary",
            "rotary_dim": c.hidden_size // c.num_attention_heads,
            "act_fn": "silu",
            "gated_mlp": True,
            "eps": c.norm_eps,
            "d_mlp": self.mlp_width(),
            "extra": {"rope_theta": rope.get("rope_theta"), "conv_L_cache": c.conv_L_cache, **self.moe_extra()},
        }

    def mlp_width(self) -> int:
        c = self.hf_config
        width = c.intermediate_size
        if getattr(c, "block_auto_adjust_ff_dim", False):  # HF's Lfm2MLP sizes itself from these
            width = int(2 * width / 3)
            if c.block_ffn_dim_multiplier is not None:
                width = int(c.block_ffn_dim_multiplier * width)
                width = c.block_multiple_of * ((width + c.block_multiple_of - 1) // c.block_multiple_of)
        return width

    def moe_extra(self) -> dict[str, Any]:
        return {}

    def block_specs(self, cfg: BridgeConfig) -> dict[str, BlockSpec]:
        norms = {"ln1": Spec(Norm, "operator_norm", RMS), "ln2": Spec(Norm, "ffn_norm", RMS)}
        attention = Spec(
            QKNormAttention,
            "self_attn",
            {"qkv": SplitQKV(), "out": "out_proj", "q_norm": "q_layernorm", "k_norm": "k_layernorm"},
        )
        mlp = Spec(MLP, "feed_forward", self.mlp_options)
        moe = Spec(BiasedSigmoidMoE, "feed_forward")
        return {
            "attention": DenseOrMoEBlockSpec(AttentionMLPBlock, {**norms, "attn": attention, "mlp": mlp}, moe_mlp=moe),
            "short_conv": DenseOrMoEBlockSpec(
                ConvMLPBlock, {**norms, "mixer": Spec(ShortConv, "conv"), "mlp": mlp}, moe_mlp=moe
            ),
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=self.per_layer(cfg),
            ln_final=Spec(Norm, "embedding_norm", RMS),
        )


class Lfm2MoeAdapter(Lfm2Adapter):
    """LFM2-MoE (``Lfm2MoeForCausalLM``): LFM2's layers with a MoE after the first ``num_dense_layers`` (sigmoid
    routing, with an expert-choice bias on the block)."""

    architectures = ("Lfm2MoeForCausalLM",)
    model_types = ("lfm2_moe",)

    def mlp_width(self) -> int:
        return self.hf_config.intermediate_size

    def moe_extra(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            "n_experts": c.num_experts,
            "experts_per_token": c.num_experts_per_tok,
            "d_expert": c.moe_intermediate_size,
            "num_dense_layers": c.num_dense_layers,
        }


class FalconH1Adapter(HybridAdapter):
    """Falcon-H1 (``FalconH1ForCausalLM``): every layer runs attention (RoPE) and a Mamba-2 mixer side by side on
    one norm (kind ``attention+mamba2``), then a gated MLP; with Falcon-H1's µP multipliers: ``hook_embed`` is after
    ``embedding_multiplier``, ``hook_attn_out``/``hook_mixer_out`` after their output multipliers, ``hook_k`` before
    ``key_multiplier`` (``hook_rot_k`` after it), the MLP's ``hook_pre`` after its gate multiplier and
    ``hook_mlp_out`` after its down multiplier, and ``W_U`` includes ``lm_head_multiplier``."""

    architectures = ("FalconH1ForCausalLM",)
    model_types = ("falcon_h1",)
    kinds: ClassVar[dict[str, str]] = {"hybrid": "attention+mamba2"}

    def layer_types(self) -> list[str]:
        return layer_kinds(self.hf_config, self.kinds, field="layers_block_type")

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        rope = rope_parameters(c)
        d_inner = c.mamba_d_ssm if c.mamba_d_ssm is not None else int(c.mamba_expand * c.hidden_size)
        return {
            **self.hybrid_overrides(),
            "d_head": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
            "positional_embedding_type": "rotary",
            "rotary_dim": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
            "act_fn": c.hidden_act,
            "gated_mlp": True,
            "extra": {
                "rope_theta": rope.get("rope_theta"),
                "embedding_multiplier": c.embedding_multiplier,
                "lm_head_multiplier": c.lm_head_multiplier,
                "logit_scale": c.lm_head_multiplier,  # in W_U/b_U, so that ln_final(resid) @ W_U + b_U is the logits
                "attention_in_multiplier": c.attention_in_multiplier,
                "attention_out_multiplier": c.attention_out_multiplier,
                "key_multiplier": c.key_multiplier,
                "ssm_in_multiplier": c.ssm_in_multiplier,
                "ssm_out_multiplier": c.ssm_out_multiplier,
                "ssm_multipliers": list(c.ssm_multipliers),
                "mlp_multipliers": list(c.mlp_multipliers),
                "d_inner": d_inner,
                "ssm_heads": c.mamba_n_heads,
                "d_state": c.mamba_d_state,
                "n_groups": c.mamba_n_groups,
                "chunk_size": c.mamba_chunk_size,
            },
        }

    def block_specs(self, cfg: BridgeConfig) -> dict[str, BlockSpec]:
        children = {
            "ln1": Spec(Norm, "input_layernorm", RMS),
            "mixer": Spec(FalconH1Mixer, "mamba", {"output_hook": False}),
            "attn": Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "o_proj", "rotary": True}),
            "ln2": Spec(Norm, "pre_ff_layernorm", RMS),
            "mlp": Spec(ScaledGateMLP, "feed_forward"),
        }
        return {"attention+mamba2": BlockSpec(ParallelMixerBlock, children)}

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        embed = Spec(ScaledEmbedding, "", {"embed": "embed_tokens", "first_layer": "layers.0"})
        return ComponentMap(
            blocks="layers",
            block=self.per_layer(cfg),
            ln_final=Spec(Norm, "final_layernorm", RMS),
            hooks={"hook_embed": embed},
        )


class Zamba2Adapter(HybridAdapter):
    """Zamba2 (``Zamba2ForCausalLM``): Mamba-2 layers (kind ``mamba2``) and hybrid layers (kind
    ``attention+mamba2``) in which one shared transformer block (attention on ``[resid | embed]``, then a GELU-gated
    MLP; its weights reused at every hybrid depth, ``num_mem_blocks`` copies in turn) runs first with this depth's
    adapters, and its output, through the layer's ``linear``, is added to the Mamba-2 layer's input
    (``SharedAttentionMixerBlock``). The shared block is hooked at each depth under that depth's block name."""

    architectures = ("Zamba2ForCausalLM",)
    model_types = ("zamba2",)
    kinds: ClassVar[dict[str, str]] = {"linear_attention": "mamba2", "hybrid": "attention+mamba2"}

    def layer_types(self) -> list[str]:
        return layer_kinds(self.hf_config, self.kinds, field="layers_block_type")

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        rope = rope_parameters(c)
        d_inner = int(c.mamba_expand * c.hidden_size)
        return {
            **self.hybrid_overrides(),
            "d_head": c.attention_head_dim,
            "positional_embedding_type": "rotary" if c.use_mem_rope else "none",
            "rotary_dim": c.attention_head_dim if c.use_mem_rope else None,
            "act_fn": c.hidden_act,
            "gated_mlp": True,
            "extra": {
                "rope_theta": rope.get("rope_theta"),
                "d_inner": d_inner,
                "ssm_heads": c.n_mamba_heads,
                "ssm_head_dim": c.mamba_headdim,
                "d_state": c.mamba_d_state,
                "d_conv": c.mamba_d_conv,
                "n_groups": c.mamba_ngroups,
                "chunk_size": c.chunk_size,
                "num_mem_blocks": c.num_mem_blocks,
                "hybrid_layer_ids": list(c.hybrid_layer_ids),
                "adapter_rank": c.adapter_rank if c.use_shared_attention_adapter else None,
            },
        }

    def block_specs(self, cfg: BridgeConfig) -> dict[str, BlockSpec]:
        rotary = bool(self.hf_config.use_mem_rope)
        mamba = {
            "ln1": Spec(Norm, "input_layernorm", RMS),
            "mixer": Spec(Mamba2Mixer, "mamba", {"output_hook": False}),
        }
        shared = "shared_transformer"
        attention = {"qkv": AdaptedQKV(), "out": "o_proj", "rotary": rotary}
        hybrid = {
            "shared_ln1": Spec(Norm, f"{shared}.input_layernorm", RMS),
            "attn": Spec(Attention, f"{shared}.self_attn", attention),
            "shared_ln2": Spec(Norm, f"{shared}.pre_ff_layernorm", RMS),
            "mlp": Spec(AdaptedGateUpMLP, f"{shared}.feed_forward"),
            "ln1": Spec(Norm, "mamba_decoder.input_layernorm", RMS),
            "mixer": Spec(Mamba2Mixer, "mamba_decoder.mamba", {"output_hook": False}),
        }
        return {
            "mamba2": BlockSpec(MixerOnlyBlock, mamba),
            "attention+mamba2": BlockSpec(SharedAttentionMixerBlock, hybrid),
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=self.per_layer(cfg),
            ln_final=Spec(Norm, "final_layernorm", RMS),
        )


HYBRID_ADAPTERS: tuple[type[Adapter], ...] = (
    JambaAdapter,
    NemotronHAdapter,
    Qwen3NextAdapter,
    BambaAdapter,
    GraniteMoeHybridAdapter,
    Qwen35Adapter,
    Qwen35MoeAdapter,
    Lfm2Adapter,
    Lfm2MoeAdapter,
    FalconH1Adapter,
    Zamba2Adapter,
)
