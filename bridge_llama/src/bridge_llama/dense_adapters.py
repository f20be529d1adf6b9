"""Adapters of dense Llama-layout models with small changes: Gemma 1, Granite, OLMo, OLMo-3, SmolLM3, StarCoder2,
Apertus, ERNIE 4.5, Seed-OSS, Nemotron (3/4, Minitron) and EXAONE 4.0.

Data only, as in ``adapters``: what differs from Llama is declared per adapter; the components that are new
(Granite's scaled embedding and residual branches, OLMo's clipped q/k/v) are in ``dense_components``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from bridge import ComponentMap, Spec
from bridge.components import MLP, Attention, QKNormAttention
from bridge.kernel import BridgeConfig
from bridge_llama.adapters import GEMMA_RMS, LLAMA_ATTN, Olmo2Adapter, RopeAdapter, rope_parameters
from bridge_llama.dense_components import ClippedSplitQKV, ScaledEmbedding, ScaledResidualBlock


class GemmaAdapter(RopeAdapter):
    """Gemma 1: Llama with a √d_model-scaled embedding (inside HF's embedding module), ``(1 + w)`` RMS norms, a
    GELU-tanh gated MLP, and a head size that is not ``d_model / n_heads``."""

    architectures = ("GemmaForCausalLM",)
    model_types = ("gemma",)
    norm = GEMMA_RMS

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["extra"]["embed_scale"] = self.hf_config.hidden_size**0.5
        return out


class GraniteScalars:
    """Granite's four scalars, for Granite and Granite-MoE: recorded in ``cfg.extra`` (``1 / logits_scaling`` as
    the ``logit_scale`` inside ``W_U``/``b_U``) and ``hook_embed`` after ``embedding_multiplier``."""

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config  # type: ignore[attr-defined]
        out = super().config_overrides()  # type: ignore[misc]
        out["extra"] |= {
            "embedding_multiplier": c.embedding_multiplier,
            "residual_multiplier": c.residual_multiplier,
            "attention_multiplier": c.attention_multiplier,
            "logits_scaling": c.logits_scaling,
            "logit_scale": 1.0 / c.logits_scaling,  # in W_U/b_U, so that ln_final(resid) @ W_U + b_U is the logits
        }
        return out

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        base = super().component_map(cfg)
        embed = Spec(ScaledEmbedding, "", {"embed": "embed_tokens", "first_layer": "layers.0"})
        return ComponentMap(blocks=base.blocks, block=base.block, ln_final=base.ln_final, hooks={"hook_embed": embed})


class GraniteAdapter(GraniteScalars, RopeAdapter):
    """Granite (3.x, PowerLM): Llama with four scalars. ``embedding_multiplier`` scales the embedding (``hook_embed``
    is after it), ``residual_multiplier`` scales each sublayer's output before it is added to the stream
    (``hook_attn_out``/``hook_mlp_out`` are after it), ``attention_multiplier`` is the score scale (in
    ``hook_attn_scores``), and HF divides the logits by ``logits_scaling`` after the LM head (``W_U``/``b_U``
    include it)."""

    architectures = ("GraniteForCausalLM",)
    model_types = ("granite",)
    wiring = ScaledResidualBlock


class OlmoAdapter(RopeAdapter):
    """OLMo (1, 0424, 0724): non-parametric layer norms (no weight, no bias, eps 1e-5 fixed in HF's code), and
    optional ``clip_qkv`` clamping the q/k/v projections (``hook_q/k/v`` are after the clamp)."""

    architectures = ("OlmoForCausalLM",)
    model_types = ("olmo",)
    norm: ClassVar[dict[str, Any]] = {"kind": "LN", "eps": 1e-5}

    @property
    def attention(self) -> tuple[type[Attention], dict[str, Any]]:  # type: ignore[override]
        return Attention, {**LLAMA_ATTN, "qkv": ClippedSplitQKV(clip=self.hf_config.clip_qkv)}

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["normalization_type"] = "LN"
        out["extra"]["clip_qkv"] = self.hf_config.clip_qkv
        return out


class Olmo3Adapter(Olmo2Adapter):
    """OLMo-3: OLMo-2's layout (norms after each sublayer only, q/k norms across all heads) with sliding-window
    layers (three of four in the published checkpoints) and RoPE parameters per layer type."""

    architectures = ("Olmo3ForCausalLM",)
    model_types = ("olmo3",)
    norm: ClassVar[dict[str, Any]] = {"kind": "RMS", "weight_in_float32": True}

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["extra"]["rope_theta_local"] = rope_parameters(self.hf_config, "sliding_attention").get("rope_theta")
        return out


class SmolLM3Adapter(RopeAdapter):
    """SmolLM3: Llama with RoPE switched off in some layers (``no_rope_layers[i] == 0``: every fourth in the
    published checkpoint). ``hook_rot_q/k`` exist in every layer and are what the scores use: equal to
    ``hook_q/k`` in the layers without RoPE."""

    architectures = ("SmolLM3ForCausalLM",)
    model_types = ("smollm3",)

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["extra"]["no_rope_layers"] = list(self.hf_config.no_rope_layers)
        return out


class Starcoder2Adapter(RopeAdapter):
    """StarCoder2: layer norms with biases, biased projections, a plain (ungated) GELU-tanh MLP ``c_fc``/``c_proj``,
    sliding-window attention."""

    architectures = ("Starcoder2ForCausalLM",)
    model_types = ("starcoder2",)
    norm: ClassVar[dict[str, Any]] = {"kind": "LN"}
    mlp = (MLP, {"pre": "c_fc", "out": "c_proj"})

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["normalization_type"] = "LN"
        return out


class ApertusAdapter(RopeAdapter):
    """Apertus (Swiss AI, 8B/70B): per-head q/k RMS norms before RoPE (``hook_q_normed``/``hook_k_normed``), an
    ungated MLP ``up_proj → xIELU → down_proj`` (``hook_pre`` before the activation, ``hook_post`` after it: the
    input of ``down_proj``; xIELU's ``alpha_p``/``alpha_n`` are trained parameters of ``mlp.act_fn``), norms named
    ``attention_layernorm``/``feedforward_layernorm``, Llama-3 RoPE scaling."""

    architectures = ("ApertusForCausalLM",)
    model_types = ("apertus",)
    attention = (QKNormAttention, {**LLAMA_ATTN, "norm_layout": "bhpd"})
    mlp = (MLP, {"pre": "up_proj", "out": "down_proj"})
    norms: ClassVar[dict[str, str]] = {"ln1": "attention_layernorm", "ln2": "feedforward_layernorm"}


class Ernie4_5Adapter(RopeAdapter):
    """ERNIE 4.5 (dense, 0.3B): Llama with RoPE on adjacent pairs ``(x0, x1), (x2, x3)…`` computed in float32, and
    biases on every projection when ``use_bias``."""

    architectures = ("Ernie4_5ForCausalLM",)
    model_types = ("ernie4_5",)

    def config_overrides(self) -> dict[str, Any]:
        return super().config_overrides() | {"rotary_adjacent_pairs": True}


class SeedOssAdapter(RopeAdapter):
    """Seed-OSS (ByteDance Seed-OSS-36B): Llama with q/k/v biases (``attention_bias``), optional output-projection
    and MLP biases, a head size that is not ``d_model / n_heads``, and residual dropout inside the attention and MLP
    modules (after ``o_proj``/``down_proj``: ``hook_attn_out``/``hook_mlp_out`` are after it; a no-op in eval)."""

    architectures = ("SeedOssForCausalLM",)
    model_types = ("seed_oss",)


class NemotronAdapter(RopeAdapter):
    """Nemotron (Nemotron-3/4, Minitron): ``LayerNorm1P`` norms (a layer norm that scales by ``1 + w``: core's
    ``Norm`` with ``weight_offset=1``), an ungated MLP ``up_proj → ReLU² → down_proj`` (``hook_post`` is
    ``relu(hook_pre)²``), partial rotary (half the head by default)."""

    architectures = ("NemotronForCausalLM",)
    model_types = ("nemotron",)
    norm: ClassVar[dict[str, Any]] = {"kind": "LN", "weight_offset": 1.0}
    mlp = (MLP, {"pre": "up_proj", "out": "down_proj"})

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["normalization_type"] = "LN"
        out["eps"] = float(self.hf_config.norm_eps)
        return out


class Exaone4Adapter(Olmo2Adapter):
    """EXAONE 4.0 (LG AI, 1.2B/32B): OLMo-2's block (RMS norms after attention and MLP only) with per-head q/k norms
    before RoPE; with a sliding window, local (sliding, RoPE) and global layers (no positions: ``hook_rot_q/k``
    equal ``hook_q_normed``/``hook_k_normed`` there), three local to one global in EXAONE-4.0-32B."""

    architectures = ("Exaone4ForCausalLM",)
    model_types = ("exaone4",)
    attention = (QKNormAttention, {**LLAMA_ATTN, "norm_layout": "bhpd"})


DENSE_ADAPTERS: tuple[type[RopeAdapter], ...] = (
    GemmaAdapter,
    GraniteAdapter,
    OlmoAdapter,
    Olmo3Adapter,
    SmolLM3Adapter,
    Starcoder2Adapter,
    ApertusAdapter,
    Ernie4_5Adapter,
    SeedOssAdapter,
    NemotronAdapter,
    Exaone4Adapter,
)
