"""Adapters of the RoPE family. Data only: config normalization and component maps.

Every architecture here lays its model out as Llama does (``model.embed_tokens``, ``model.layers[i]``
with ``self_attn`` and ``mlp``, ``model.norm``, ``lm_head``); what differs is declared per adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import (
    MLP,
    Attention,
    Block,
    FusedQKV,
    MoE,
    Norm,
    QKNormAttention,
    SequentialBlock,
    SplitQKV,
    softmax_then_topk,
)
from bridge.kernel import BridgeConfig
from bridge_llama.components import GateUpMLP, SandwichBlock

RMS = {"kind": "RMS"}
GEMMA_RMS = {"kind": "RMS", "weight_offset": 1.0}  # Gemma scales by (1 + w)
LLAMA_MLP = {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"}
LLAMA_ATTN = {"qkv": SplitQKV(), "out": "o_proj", "rotary": True}


def rope_parameters(hf_config: Any, layer_type: str | None = None) -> dict[str, Any]:
    """The RoPE parameters of a config (of one layer type when they differ per type, as in Gemma 3)."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    if layer_type is None and params and all(isinstance(v, Mapping) for v in params.values()):
        layer_type = "full_attention"
    return dict(params.get(layer_type, {})) if layer_type is not None else params


class RopeAdapter(Adapter):
    """The Llama layout, with the few knobs the family turns; subclasses are mostly data."""

    attention: ClassVar[tuple[type[Attention], dict[str, Any]]] = (Attention, LLAMA_ATTN)
    mlp: ClassVar[tuple[type, dict[str, Any]]] = (MLP, LLAMA_MLP)
    norm: ClassVar[dict[str, Any]] = RMS
    #: how the block's children are combined into the residual stream
    wiring: ClassVar[type[Block]] = SequentialBlock
    #: canonical norm name (``ln1``, ``ln1_post``, ``ln2``, ``ln2_post``) → HF path in the layer
    norms: ClassVar[dict[str, str]] = {"ln1": "input_layernorm", "ln2": "post_attention_layernorm"}
    extra_paths: ClassVar[dict[str, str]] = {}

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        rope = rope_parameters(c)
        return {
            "d_head": d_head,
            "positional_embedding_type": "rotary",
            "normalization_type": "RMS",
            "rotary_dim": int(d_head * rope.get("partial_rotary_factor", 1.0)),
            "act_fn": getattr(c, "hidden_activation", None) or c.hidden_act,
            "extra": {
                "rope_theta": rope.get("rope_theta"),
                "sliding_window": getattr(c, "sliding_window", None),
                "layer_types": getattr(c, "layer_types", None),
            },
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        attn_kind, attn_options = self.attention
        mlp_kind, mlp_options = self.mlp
        children = {name: Spec(Norm, path, self.norm) for name, path in self.norms.items()}
        children["attn"] = Spec(attn_kind, "self_attn", attn_options)
        children["mlp"] = Spec(mlp_kind, "mlp", mlp_options)
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=BlockSpec(self.wiring, children, self.extra_paths),
            ln_final=Spec(Norm, "norm", self.norm),
        )


class LlamaAdapter(RopeAdapter):
    """Llama 1–3: RoPE, GQA, RMSNorm, gated SiLU MLP."""

    architectures = ("LlamaForCausalLM",)
    model_types = ("llama",)


class MistralAdapter(RopeAdapter):
    """Mistral: Llama with sliding-window attention (the window is in the mask HF builds)."""

    architectures = ("MistralForCausalLM",)
    model_types = ("mistral",)


class Qwen2Adapter(RopeAdapter):
    """Qwen2 / Qwen2.5: Llama with biases on the q/k/v projections."""

    architectures = ("Qwen2ForCausalLM",)
    model_types = ("qwen2",)


class Qwen3Adapter(RopeAdapter):
    """Qwen3: per-head RMS norms on q and k before RoPE (``hook_q_normed``/``hook_k_normed``)."""

    architectures = ("Qwen3ForCausalLM",)
    model_types = ("qwen3",)
    attention = (QKNormAttention, {**LLAMA_ATTN, "norm_layout": "bphd"})


class Phi3Adapter(RopeAdapter):
    """Phi-3: fused ``qkv_proj`` and ``gate_up_proj``, split into the usual hooks; partial rotary."""

    architectures = ("Phi3ForCausalLM",)
    model_types = ("phi3",)
    attention = (Attention, {"qkv": FusedQKV("qkv_proj", layout="grouped"), "out": "o_proj", "rotary": True})
    mlp = (GateUpMLP, {"fused": "gate_up_proj", "out": "down_proj"})
    extra_paths: ClassVar[dict[str, str]] = {"attn_dropout": "resid_attn_dropout", "mlp_dropout": "resid_mlp_dropout"}


class Olmo2Adapter(RopeAdapter):
    """OLMo-2: norms after attention and MLP only (no pre-norms); q/k norms across all heads."""

    architectures = ("Olmo2ForCausalLM",)
    model_types = ("olmo2",)
    attention = (QKNormAttention, {**LLAMA_ATTN, "norm_layout": "flat"})
    wiring = SandwichBlock
    norms: ClassVar[dict[str, str]] = {"ln1_post": "post_attention_layernorm", "ln2_post": "post_feedforward_layernorm"}


class Gemma2Adapter(RopeAdapter):
    """Gemma 2: √d_model-scaled embedding, sandwich norms with ``(1 + w)`` weights, attention and final-logit
    soft-capping, alternating sliding/global layers, GELU-tanh gated MLP."""

    architectures = ("Gemma2ForCausalLM",)
    model_types = ("gemma2",)
    norm = GEMMA_RMS
    wiring = SandwichBlock
    norms: ClassVar[dict[str, str]] = {
        "ln1": "input_layernorm",
        "ln1_post": "post_attention_layernorm",
        "ln2": "pre_feedforward_layernorm",
        "ln2_post": "post_feedforward_layernorm",
    }

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        out = super().config_overrides()
        out["extra"] |= {
            "embed_scale": c.hidden_size**0.5,
            "query_pre_attn_scalar": c.query_pre_attn_scalar,
            "attn_logit_softcapping": c.attn_logit_softcapping,
            "final_logit_softcapping": c.final_logit_softcapping,
        }
        return out


class Gemma3Adapter(Gemma2Adapter):
    """Gemma 3 (text): Gemma 2's layout with q/k norms, and different RoPE bases on local and global layers."""

    architectures = ("Gemma3ForCausalLM",)
    model_types = ("gemma3_text",)
    attention = (QKNormAttention, {**LLAMA_ATTN, "norm_layout": "bhpd"})

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["extra"]["rope_theta_local"] = rope_parameters(self.hf_config, "sliding_attention").get("rope_theta")
        return out


class MixtralAdapter(RopeAdapter):
    """Mixtral: Mistral with a sparse MoE MLP (softmax router, top-k, renormalized weights)."""

    architectures = ("MixtralForCausalLM",)
    model_types = ("mixtral",)
    mlp = (MoE, {"routing": softmax_then_topk(normalize=True), "router": "gate", "experts": "experts"})

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        out = super().config_overrides()
        out["gated_mlp"] = True  # the experts are SiLU-gated
        out["extra"] |= {"n_experts": c.num_local_experts, "experts_per_token": c.num_experts_per_tok}
        return out
