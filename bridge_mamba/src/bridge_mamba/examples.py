"""Examples of the bridge_mamba adapters: tiny configs and inputs for the conformance kit and tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import (
    BambaConfig,
    FalconH1Config,
    FalconMambaConfig,
    GraniteMoeHybridConfig,
    JambaConfig,
    Lfm2Config,
    Lfm2MoeConfig,
    Mamba2Config,
    MambaConfig,
    NemotronHConfig,
    Qwen3_5MoeTextConfig,
    Qwen3_5TextConfig,
    Qwen3NextConfig,
    Zamba2Config,
)

from bridge.kernel import TINY_SPECIAL_IDS, TINY_VOCAB, Adapter, Examples
from bridge_mamba.adapters import FalconMambaAdapter, Mamba2Adapter, MambaAdapter
from bridge_mamba.hybrid_adapters import (
    BambaAdapter,
    FalconH1Adapter,
    GraniteMoeHybridAdapter,
    JambaAdapter,
    Lfm2Adapter,
    Lfm2MoeAdapter,
    NemotronHAdapter,
    Qwen3NextAdapter,
    Qwen35Adapter,
    Qwen35MoeAdapter,
    Zamba2Adapter,
)


class MambaExamples(Examples):
    adapter = MambaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> MambaConfig:
        return MambaConfig(
            num_hidden_layers=2,
            hidden_size=32,
            state_size=8,
            expand=2,
            conv_kernel=4,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


class Mamba2Examples(Examples):
    adapter = Mamba2Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Mamba2Config:
        # chunk_size 4 < the kit's 12 tokens: the chunked scan crosses chunks and pads the last one.
        return Mamba2Config(
            num_hidden_layers=2,
            hidden_size=32,
            expand=2,
            num_heads=8,
            head_dim=8,
            n_groups=2,
            state_size=8,
            conv_kernel=4,
            chunk_size=4,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


class FalconMambaExamples(Examples):
    adapter = FalconMambaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> FalconMambaConfig:
        return FalconMambaConfig(
            num_hidden_layers=2,
            hidden_size=32,
            state_size=8,
            expand=2,
            conv_kernel=4,
            time_step_rank=4,
            vocab_size=TINY_VOCAB,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


@dataclass(frozen=True)
class PerBlockOutput:
    """An HF output with ``attentions`` laid out per block: the pattern of each attention layer at its block's
    index, ``None`` at the others (HF returns patterns for its attention layers only, in order)."""

    hidden_states: Any
    attentions: tuple[Any, ...]


class HybridExamples(Examples):
    """Examples of a hybrid: the kit's pattern check reads HF's ``attentions`` by block, so they are spread out
    to the attention layers' indices (``cfg.layer_types``)."""

    @classmethod
    def reference_part(
        cls, adapter: Adapter, prefix: str, n_layers: int, reference: nn.Module, inputs: Any, output: Any
    ) -> tuple[Any, tuple[str, ...]]:
        part, hooks = super().reference_part(adapter, prefix, n_layers, reference, inputs, output)
        kinds = adapter.bridge_config().layer_types or []
        found = iter(getattr(part, "attentions", None) or ())
        per_block = tuple(next(found, None) if "attention" in kind.split("+") else None for kind in kinds)
        return PerBlockOutput(part.hidden_states, per_block), hooks


class JambaExamples(HybridExamples):
    adapter = JambaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> JambaConfig:
        # attention at 0 and 3, Mamba at 1 and 2; MoE at 1 and 3: every (mixer, MLP) pair once
        return cls.tiny(num_hidden_layers=4, attn_layer_period=3, attn_layer_offset=0)

    @classmethod
    def conformance_configs(cls) -> dict[str, JambaConfig]:
        # ai21labs/Jamba-v0.1's layout scaled down: attention every 8th layer from 4, MoE every other from 1, GQA
        return {"jamba-v0.1-layout": cls.tiny(num_hidden_layers=6, attn_layer_period=8, attn_layer_offset=4)}

    @classmethod
    def tiny(cls, **layout: Any) -> JambaConfig:
        return JambaConfig(
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            expert_layer_period=2,
            expert_layer_offset=1,
            num_experts=4,
            num_experts_per_tok=2,
            mamba_d_state=8,
            mamba_d_conv=4,
            mamba_expand=2,
            mamba_dt_rank=4,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=["JambaForCausalLM"],
            **layout,
        )


class NemotronHExamples(HybridExamples):
    adapter = NemotronHAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> NemotronHConfig:
        return cls.tiny(layers_block_type=["full_attention", "linear_attention", "moe", "linear_attention", "mlp"])

    @classmethod
    def conformance_configs(cls) -> dict[str, NemotronHConfig]:
        # the older pattern string of nvidia/Nemotron-H-8B-Base ("M" Mamba-2, "-" MLP, "*" attention), cut short,
        # with a MoE layer ("E") as in Nemotron-3-Nano; chunk 4 < 12 tokens: the chunked scan crosses chunks
        return {"nemotron-h-pattern": cls.tiny(hybrid_override_pattern="M-M*-ME", chunk_size=4)}

    @classmethod
    def tiny(cls, **layout: Any) -> NemotronHConfig:
        return NemotronHConfig(
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            mamba_num_heads=4,
            mamba_head_dim=8,
            n_groups=2,
            ssm_state_size=8,
            conv_kernel=4,
            n_routed_experts=4,
            num_experts_per_tok=2,
            n_group=2,
            topk_group=1,
            moe_intermediate_size=16,
            moe_shared_expert_intermediate_size=16,
            # HF clamps Δ at time_step_min on the full-sequence path only, not when decoding; with the default
            # (0.001, also the lowest Δ the initialisation draws) the two disagree, so the kit's step-by-step state
            # reference would too. Δ is drawn ≥ 0.01 here and clamped at 1e-6: never reached.
            time_step_min=1e-6,
            time_step_floor=0.01,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=["NemotronHForCausalLM"],
            **layout,
        )


class Qwen3NextExamples(HybridExamples):
    adapter = Qwen3NextAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Qwen3NextConfig:
        # attention first, then two Gated DeltaNet layers; the first layer's MLP dense, the others MoEs
        kinds = ["full_attention", "linear_attention", "linear_attention"]
        return cls.tiny(num_hidden_layers=3, layer_types=kinds, mlp_only_layers=[0])

    @classmethod
    def conformance_configs(cls) -> dict[str, Qwen3NextConfig]:
        # Qwen/Qwen3-Next-80B-A3B's layout: three Gated DeltaNet layers then one gated attention layer (the
        # config's default full_attention_interval 4), a MoE on every layer
        return {"qwen3-next-layout": cls.tiny(num_hidden_layers=4)}

    @classmethod
    def tiny(cls, **layout: Any) -> Qwen3NextConfig:
        return Qwen3NextConfig(
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            linear_key_head_dim=8,
            linear_value_head_dim=8,
            linear_conv_kernel_dim=4,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=16,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=["Qwen3NextForCausalLM"],
            **layout,
        )


class BambaExamples(HybridExamples):
    adapter = BambaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> BambaConfig:
        return cls.tiny(num_hidden_layers=3, attn_layer_indices=[0])

    @classmethod
    def conformance_configs(cls) -> dict[str, BambaConfig]:
        # ibm-ai-platform/Bamba-9B's layout scaled down: attention deep inside a stack of Mamba-2 layers
        return {"bamba-9b-layout": cls.tiny(num_hidden_layers=5, attn_layer_indices=[2], mamba_chunk_size=4)}

    @classmethod
    def tiny(cls, **layout: Any) -> BambaConfig:
        return BambaConfig(
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            mamba_n_heads=4,
            mamba_d_head=8,
            mamba_n_groups=2,
            mamba_d_state=8,
            mamba_d_conv=4,
            mamba_expand=1,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=["BambaForCausalLM"],
            **layout,
        )


class GraniteMoeHybridExamples(HybridExamples):
    adapter = GraniteMoeHybridAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> GraniteMoeHybridConfig:
        return cls.tiny(layer_types=["attention", "mamba", "mamba"], position_embedding_type="rope")

    @classmethod
    def conformance_configs(cls) -> dict[str, GraniteMoeHybridConfig]:
        # ibm-granite/granite-4.0-h-tiny's layout scaled down (no positional encoding, attention deep in Mamba-2
        # layers); granite-4.0-h-micro's dense variant (no experts: the shared MLP alone)
        layout = ["mamba", "mamba", "attention", "mamba"]
        return {
            "granite-4.0-h-layout": cls.tiny(layer_types=layout, mamba_chunk_size=4),
            "granite-4.0-h-dense": cls.tiny(layer_types=layout, num_local_experts=0),
        }

    @classmethod
    def tiny(cls, **layout: Any) -> GraniteMoeHybridConfig:
        return GraniteMoeHybridConfig(
            **{
                "num_hidden_layers": len(layout["layer_types"]),
                "hidden_size": 32,
                "intermediate_size": 16,
                "shared_intermediate_size": 48,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "num_local_experts": 4,
                "num_experts_per_tok": 2,
                "mamba_n_heads": 8,
                "mamba_n_groups": 2,
                "mamba_d_state": 8,
                "mamba_d_conv": 4,
                "mamba_expand": 2,
                "embedding_multiplier": 3.0,
                "residual_multiplier": 0.5,
                "attention_multiplier": 0.25,
                "logits_scaling": 2.0,
                "vocab_size": TINY_VOCAB,
                **TINY_SPECIAL_IDS,
                "architectures": ["GraniteMoeHybridForCausalLM"],
                **layout,
            }
        )


QWEN35_SIZES = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 8,
    "linear_value_head_dim": 8,
    "linear_conv_kernel_dim": 4,
    "vocab_size": TINY_VOCAB,
    **TINY_SPECIAL_IDS,
}


class Qwen35Examples(HybridExamples):
    adapter = Qwen35Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Qwen3_5TextConfig:
        kinds = ["full_attention", "linear_attention", "linear_attention"]
        return Qwen3_5TextConfig(
            **QWEN35_SIZES,
            intermediate_size=48,
            num_hidden_layers=3,
            layer_types=kinds,
            architectures=["Qwen3_5ForCausalLM"],
        )


class Qwen35MoeExamples(HybridExamples):
    adapter = Qwen35MoeAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Qwen3_5MoeTextConfig:
        # Qwen3.5-MoE's layout: three Gated DeltaNet layers, then gated attention (the default interval 4)
        return Qwen3_5MoeTextConfig(
            **QWEN35_SIZES,
            num_hidden_layers=4,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=16,
            architectures=["Qwen3_5MoeForCausalLM"],
        )


LFM2_SIZES = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "conv_L_cache": 3,
    "vocab_size": TINY_VOCAB,
    **TINY_SPECIAL_IDS,
}


class Lfm2Examples(HybridExamples):
    adapter = Lfm2Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Lfm2Config:
        return Lfm2Config(
            **LFM2_SIZES,
            intermediate_size=72,
            num_hidden_layers=3,
            layer_types=["full_attention", "conv", "conv"],
            architectures=["Lfm2ForCausalLM"],
        )

    @classmethod
    def conformance_configs(cls) -> dict[str, Lfm2Config]:
        # LiquidAI/LFM2-350M's layout cut short: convolutions, then attention, read from full_attn_idxs
        return {
            "lfm2-layout": Lfm2Config(
                **LFM2_SIZES,
                intermediate_size=72,
                num_hidden_layers=4,
                full_attn_idxs=[2],
                architectures=["Lfm2ForCausalLM"],
            )
        }


class Lfm2MoeExamples(HybridExamples):
    adapter = Lfm2MoeAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Lfm2MoeConfig:
        # the first layer dense, the others MoEs (num_dense_layers); attention at 0, convolutions after
        return Lfm2MoeConfig(
            **LFM2_SIZES,
            intermediate_size=48,
            moe_intermediate_size=16,
            num_experts=4,
            num_experts_per_tok=2,
            num_dense_layers=1,
            num_hidden_layers=3,
            layer_types=["full_attention", "conv", "conv"],
            architectures=["Lfm2MoeForCausalLM"],
        )


class FalconH1Examples(HybridExamples):
    adapter = FalconH1Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> FalconH1Config:
        # every multiplier away from 1, so a misplaced one shows
        return cls.tiny(mamba_rms_norm=False)

    @classmethod
    def conformance_configs(cls) -> dict[str, FalconH1Config]:
        # tiiuae/Falcon-H1's variants with the gated RMSNorm in the mixer, normalizing before or after the gate
        return {
            "falcon-h1-rms-norm": cls.tiny(mamba_rms_norm=True, mamba_norm_before_gate=True),
            "falcon-h1-gate-then-norm": cls.tiny(mamba_rms_norm=True, mamba_norm_before_gate=False),
        }

    @classmethod
    def tiny(cls, **variant: Any) -> FalconH1Config:
        return FalconH1Config(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            num_key_value_heads=2,
            mamba_d_ssm=32,
            mamba_n_heads=4,
            mamba_d_head=8,
            mamba_n_groups=2,
            mamba_d_state=8,
            mamba_d_conv=4,
            mamba_chunk_size=4,
            embedding_multiplier=2.0,
            lm_head_multiplier=0.5,
            attention_in_multiplier=1.5,
            attention_out_multiplier=0.75,
            key_multiplier=0.8,
            ssm_in_multiplier=1.25,
            ssm_out_multiplier=0.6,
            ssm_multipliers=[0.9, 1.1, 1.2, 0.8, 1.3],
            mlp_multipliers=[1.2, 0.7],
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=["FalconH1ForCausalLM"],
            **variant,
        )


class Zamba2Examples(HybridExamples):
    adapter = Zamba2Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Zamba2Config:
        # hybrid layers at 1, 3 and 4 with two shared blocks in turn (Zyphra/Zamba2-2.7B's ABAB): 1 and 4 share one
        # block's weights, each with its own adapters, 3 has the other; the attention's adapters on, RoPE off
        return cls.tiny(
            layers_block_type=["mamba", "hybrid", "mamba", "hybrid", "hybrid"],
            num_mem_blocks=2,
            use_shared_attention_adapter=True,
        )

    @classmethod
    def conformance_configs(cls) -> dict[str, Zamba2Config]:
        # the config's other choices: one shared block (every hybrid depth the same weights), RoPE in it, the
        # attention adapters off (the MLP's always on)
        return {
            "zamba2-one-block-rope": cls.tiny(
                layers_block_type=["mamba", "mamba", "hybrid", "mamba", "hybrid"],
                num_mem_blocks=1,
                use_mem_rope=True,
                use_shared_attention_adapter=False,
            )
        }

    @classmethod
    def tiny(cls, **layout: Any) -> Zamba2Config:
        return Zamba2Config(
            num_hidden_layers=len(layout["layers_block_type"]),
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=4,
            mamba_d_state=8,
            mamba_d_conv=4,
            mamba_expand=2,
            n_mamba_heads=4,
            mamba_ngroups=2,
            chunk_size=4,
            adapter_rank=4,
            # as Nemotron-H: HF clamps Δ at time_step_min on the full-sequence path only; Δ drawn ≥ 0.01 here
            time_step_min=1e-6,
            time_step_floor=0.01,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=["Zamba2ForCausalLM"],
            **layout,
        )


#: The examples of every adapter the family registers.
EXAMPLES = (
    MambaExamples,
    Mamba2Examples,
    FalconMambaExamples,
    JambaExamples,
    NemotronHExamples,
    Qwen3NextExamples,
    BambaExamples,
    GraniteMoeHybridExamples,
    Qwen35Examples,
    Qwen35MoeExamples,
    Lfm2Examples,
    Lfm2MoeExamples,
    FalconH1Examples,
    Zamba2Examples,
)
