"""Adapters of the RoPE family whose blocks are not Llama's sequential pre-norm block or whose norms are layer
norms: Phi-1/1.5/2 and Cohere (a parallel block reading one shared norm), StableLM (either block), Cohere 2
(Cohere with sliding-window layers, RoPE on those only), GLM-4 (sandwich norms), GLM and Persimmon.

Data only, as in ``bridge_llama.adapters``; what a config switches on (q/k norms, the parallel residual) is
chosen per config in ``attention_spec``/``block_layout``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from bridge import BlockSpec, ComponentMap, Spec
from bridge.components import (
    MLP,
    Attention,
    Block,
    FusedQKV,
    Norm,
    NormLayout,
    ParallelBlock,
    QKNormAttention,
    SequentialBlock,
    SharedNormParallelBlock,
    SplitQKV,
)
from bridge.kernel import BridgeConfig
from bridge_llama.adapters import RopeAdapter
from bridge_llama.components import GateUpMLP, SandwichBlock

LN = {"kind": "LN"}


class RopeLayoutAdapter(RopeAdapter):
    """The Llama map with the final norm at ``final_norm``, and an attention and block layout that may depend on
    the config (override ``attention_spec``/``block_layout``)."""

    final_norm: ClassVar[str] = "norm"
    #: ``(config flag, q norm path, k norm path, layout)``: q/k norms the config can switch on.
    qk_norms: ClassVar[tuple[str, str, str, NormLayout] | None] = None
    #: Whether RoPE rotates adjacent pairs of dims (``rotate_half`` on ``x[..., ::2]``/``x[..., 1::2]``).
    adjacent_pairs: ClassVar[bool] = False

    def config_overrides(self) -> dict[str, Any]:
        return super().config_overrides() | {
            "normalization_type": self.norm["kind"],
            "rotary_adjacent_pairs": self.adjacent_pairs,
            "parallel_attn_mlp": issubclass(self.block_layout()[0], ParallelBlock),
        }

    def attention_spec(self) -> Spec:
        """The ``attn`` child: ``QKNormAttention`` where the config turns on the q/k norms."""
        kind, options = self.attention
        if self.qk_norms is not None and getattr(self.hf_config, self.qk_norms[0], False):
            _flag, q_norm, k_norm, layout = self.qk_norms
            kind, options = QKNormAttention, {**options, "q_norm": q_norm, "k_norm": k_norm, "norm_layout": layout}
        return Spec(kind, "self_attn", options)

    def block_layout(self) -> tuple[type[Block], dict[str, str], dict[str, str]]:
        """``(wiring, canonical norm name → HF path, extra paths)`` of this config's blocks."""
        return self.wiring, self.norms, self.extra_paths

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        base = super().component_map(cfg)
        wiring, norms, extra_paths = self.block_layout()
        children = {name: Spec(Norm, path, self.norm) for name, path in norms.items()}
        children |= {"attn": self.attention_spec(), "mlp": base.block.children["mlp"]}
        return replace(
            base, block=BlockSpec(wiring, children, extra_paths), ln_final=Spec(Norm, self.final_norm, self.norm)
        )


class PhiAdapter(RopeLayoutAdapter):
    """Phi-1/1.5/2: attention and a GELU MLP in parallel on one shared LayerNorm, partial rotary, ``dense`` output
    projection, optional per-head q/k LayerNorms (``qk_layernorm``), biased LM head."""

    architectures = ("PhiForCausalLM",)
    model_types = ("phi",)
    norm = LN
    attention = (Attention, {"qkv": SplitQKV(), "out": "dense", "rotary": True})
    mlp = (MLP, {"pre": "fc1", "out": "fc2"})
    wiring = SharedNormParallelBlock
    norms: ClassVar[dict[str, str]] = {"ln1": "input_layernorm"}
    extra_paths: ClassVar[dict[str, str]] = {"attn_dropout": "resid_dropout", "mlp_dropout": "resid_dropout"}
    final_norm = "final_layernorm"
    qk_norms = ("qk_layernorm", "q_layernorm", "k_layernorm", "bhpd")


class StableLmAdapter(RopeLayoutAdapter):
    """StableLM (2, 3B-4E1T…): LayerNorms, partial rotary, q/k/v biases (``use_qkv_bias``), per-head q/k LayerNorms
    (``qk_layernorm``) and, with ``use_parallel_residual``, attention and MLP in parallel on ``input_layernorm``."""

    architectures = ("StableLmForCausalLM",)
    model_types = ("stablelm",)
    norm = LN
    qk_norms = ("qk_layernorm", "q_layernorm", "k_layernorm", "bhpd")

    def block_layout(self) -> tuple[type[Block], dict[str, str], dict[str, str]]:
        dropout = {"mlp_dropout": "dropout"}  # HF drops out the MLP's output only
        if self.hf_config.use_parallel_residual:
            return SharedNormParallelBlock, {"ln1": "input_layernorm"}, dropout
        return SequentialBlock, {"ln1": "input_layernorm", "ln2": "post_attention_layernorm"}, dropout


class CohereAdapter(RopeLayoutAdapter):
    """Cohere (Command R, R+, Aya 23): attention and a gated MLP in parallel on one shared bias-free LayerNorm,
    RoPE on adjacent pairs, optional per-head q/k LayerNorms (``use_qk_norm``), logits times ``logit_scale``
    (in ``W_U``)."""

    architectures = ("CohereForCausalLM",)
    model_types = ("cohere",)
    norm = LN
    wiring = SharedNormParallelBlock
    norms: ClassVar[dict[str, str]] = {"ln1": "input_layernorm"}
    qk_norms = ("use_qk_norm", "q_norm", "k_norm", "bphd")
    adjacent_pairs = True

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["extra"]["logit_scale"] = self.hf_config.logit_scale
        return out


class Cohere2Adapter(CohereAdapter):
    """Cohere 2 (Command R7B, A): Cohere's block with sliding-window layers; only those rotate q and k (the
    full-attention layers use no positional encoding, so their ``hook_rot_q/k`` equal ``hook_q/k``)."""

    architectures = ("Cohere2ForCausalLM",)
    model_types = ("cohere2",)


class Glm4Adapter(RopeLayoutAdapter):
    """GLM-4 (0414): sandwich RMSNorms (after attention and MLP too), partial RoPE on adjacent pairs, q/k/v
    biases, fused ``gate_up_proj``."""

    architectures = ("Glm4ForCausalLM",)
    model_types = ("glm4",)
    mlp = (GateUpMLP, {"fused": "gate_up_proj", "out": "down_proj"})
    wiring = SandwichBlock
    norms: ClassVar[dict[str, str]] = {
        "ln1": "input_layernorm",
        "ln1_post": "post_self_attn_layernorm",
        "ln2": "post_attention_layernorm",
        "ln2_post": "post_mlp_layernorm",
    }
    adjacent_pairs = True


class GlmAdapter(RopeLayoutAdapter):
    """GLM (GLM-4 before 0414): the Llama block with q/k/v biases, fused ``gate_up_proj``, partial RoPE on
    adjacent pairs."""

    architectures = ("GlmForCausalLM",)
    model_types = ("glm",)
    mlp = (GateUpMLP, {"fused": "gate_up_proj", "out": "down_proj"})
    adjacent_pairs = True


class PersimmonAdapter(RopeLayoutAdapter):
    """Persimmon (Adept persimmon-8b): LayerNorms, a fused ``query_key_value`` projection laid out per head
    ``[q | k | v]``, optional per-head q/k LayerNorms (``qk_layernorm``, on in the checkpoints), partial rotary (half
    the head), a biased ungated MLP ``dense_h_to_4h → ReLU² → dense_4h_to_h`` followed by dropout, ``final_layernorm``.
    """

    architectures = ("PersimmonForCausalLM",)
    model_types = ("persimmon",)
    norm = LN
    attention = (Attention, {"qkv": FusedQKV("query_key_value", layout="per_head"), "out": "dense", "rotary": True})
    mlp = (MLP, {"pre": "dense_h_to_4h", "out": "dense_4h_to_h"})
    extra_paths: ClassVar[dict[str, str]] = {"mlp_dropout": "dropout"}
    final_norm = "final_layernorm"
    qk_norms = ("qk_layernorm", "q_layernorm", "k_layernorm", "bphd")

    def config_overrides(self) -> dict[str, Any]:
        return super().config_overrides() | {"n_key_value_heads": self.hf_config.num_attention_heads}  # no GQA


PARALLEL_ADAPTERS: tuple[type[RopeAdapter], ...] = (
    PhiAdapter,
    StableLmAdapter,
    CohereAdapter,
    Cohere2Adapter,
    Glm4Adapter,
    GlmAdapter,
    PersimmonAdapter,
)
