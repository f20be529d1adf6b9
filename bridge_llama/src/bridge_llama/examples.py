"""Examples of the bridge_llama adapters: tiny configs and inputs for the conformance kit and tests."""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import (
    ApertusConfig,
    Cohere2Config,
    CohereConfig,
    Ernie4_5Config,
    Exaone4Config,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    Glm4Config,
    Glm4MoeConfig,
    GlmConfig,
    GptOssConfig,
    GraniteConfig,
    GraniteMoeConfig,
    HunYuanDenseV1Config,
    HunYuanMoEV1Config,
    Llama4TextConfig,
    LlamaConfig,
    MiniMaxConfig,
    MistralConfig,
    MixtralConfig,
    NemotronConfig,
    Olmo2Config,
    Olmo3Config,
    OlmoConfig,
    OlmoeConfig,
    PersimmonConfig,
    Phi3Config,
    PhiConfig,
    PhimoeConfig,
    Qwen2Config,
    Qwen2MoeConfig,
    Qwen3Config,
    Qwen3MoeConfig,
    SeedOssConfig,
    SmolLM3Config,
    StableLmConfig,
    Starcoder2Config,
)

from bridge.kernel import TINY_SPECIAL_IDS, TINY_VOCAB, Examples
from bridge_llama.adapters import (
    Gemma2Adapter,
    Gemma3Adapter,
    LlamaAdapter,
    MistralAdapter,
    MixtralAdapter,
    Olmo2Adapter,
    Phi3Adapter,
    Qwen2Adapter,
    Qwen3Adapter,
    RopeAdapter,
)
from bridge_llama.dense_adapters import (
    ApertusAdapter,
    Ernie4_5Adapter,
    Exaone4Adapter,
    GemmaAdapter,
    GraniteAdapter,
    NemotronAdapter,
    Olmo3Adapter,
    OlmoAdapter,
    SeedOssAdapter,
    SmolLM3Adapter,
    Starcoder2Adapter,
)
from bridge_llama.glm4_moe import Glm4MoeAdapter
from bridge_llama.gpt_oss import GPT_OSS_YARN, GptOssAdapter
from bridge_llama.hunyuan import HunYuanDenseV1Adapter, HunYuanMoEV1Adapter
from bridge_llama.llama4 import Llama4Adapter
from bridge_llama.minimax import MiniMaxAdapter
from bridge_llama.moe_adapters import (
    GraniteMoeAdapter,
    OlmoeAdapter,
    PhimoeAdapter,
    Qwen2MoeAdapter,
    Qwen3MoeAdapter,
    RopeMoEAdapter,
)
from bridge_llama.parallel_adapters import (
    Cohere2Adapter,
    CohereAdapter,
    Glm4Adapter,
    GlmAdapter,
    PersimmonAdapter,
    PhiAdapter,
    RopeLayoutAdapter,
    StableLmAdapter,
)

#: Shared by every example config: tiny, two layers, GQA, the tiny tokenizer's special ids.
TINY = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "vocab_size": TINY_VOCAB,
    **TINY_SPECIAL_IDS,
}


#: Shared by the example configs: 4 experts, 2 per token, small experts.
TINY_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}


class RopeExamples(Examples):
    adapter = RopeAdapter

    example_class: ClassVar[type] = LlamaConfig

    example_options: ClassVar[dict[str, Any]] = {}

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return cls.example_class(
            **{**TINY, **cls.example_options}, architectures=[architecture or cls.adapter.architectures[0]]
        )


class LlamaExamples(RopeExamples):
    adapter = LlamaAdapter


class MistralExamples(RopeExamples):
    adapter = MistralAdapter

    example_class = MistralConfig

    example_options: ClassVar[dict[str, Any]] = {"sliding_window": 4}


class Qwen2Examples(RopeExamples):
    adapter = Qwen2Adapter

    example_class = Qwen2Config


class Qwen3Examples(RopeExamples):
    adapter = Qwen3Adapter

    example_class = Qwen3Config

    example_options: ClassVar[dict[str, Any]] = {"head_dim": 16}


class Phi3Examples(RopeExamples):
    adapter = Phi3Adapter

    example_class = Phi3Config

    example_options: ClassVar[dict[str, Any]] = {
        "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}
    }


class Olmo2Examples(RopeExamples):
    adapter = Olmo2Adapter

    example_class = Olmo2Config


class Gemma2Examples(RopeExamples):
    adapter = Gemma2Adapter

    example_class = Gemma2Config

    example_options: ClassVar[dict[str, Any]] = {
        "head_dim": 16,
        "query_pre_attn_scalar": 24,
        "sliding_window": 4,
        # Small enough to bite on a tiny random model (its scores are ~0.1, its logits ~1).
        "attn_logit_softcapping": 0.05,
        "final_logit_softcapping": 0.5,
    }


class Gemma3Examples(Gemma2Examples):
    adapter = Gemma3Adapter

    example_class = Gemma3TextConfig

    example_options: ClassVar[dict[str, Any]] = {
        "head_dim": 16,
        "query_pre_attn_scalar": 24,
        "sliding_window": 4,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
        },
    }


class MixtralExamples(RopeExamples):
    adapter = MixtralAdapter

    example_class = MixtralConfig

    example_options: ClassVar[dict[str, Any]] = {
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": None,
    }


class GemmaExamples(RopeExamples):
    adapter = GemmaAdapter

    example_class = GemmaConfig

    example_options: ClassVar[dict[str, Any]] = {"head_dim": 24}


class GraniteExamples(RopeExamples):
    adapter = GraniteAdapter

    example_class = GraniteConfig

    example_options: ClassVar[dict[str, Any]] = {
        # granite-3.x's multipliers; the score scale differs from both d_head**-0.5 and the published 1/64
        # (the real-checkpoint variants run that one)
        "embedding_multiplier": 12.0,
        "residual_multiplier": 0.22,
        "attention_multiplier": 0.5,
        "logits_scaling": 8.0,
    }


class OlmoExamples(RopeExamples):
    adapter = OlmoAdapter

    example_class = OlmoConfig

    example_options: ClassVar[dict[str, Any]] = {"clip_qkv": 0.08}  # small enough to clip some tiny-model q, k, v


class Olmo3Examples(Olmo2Examples):
    adapter = Olmo3Adapter

    example_class = Olmo3Config

    example_options: ClassVar[dict[str, Any]] = {
        "sliding_window": 4,
        "layer_types": ["sliding_attention", "full_attention"],
    }


class SmolLM3Examples(RopeExamples):
    adapter = SmolLM3Adapter

    example_class = SmolLM3Config

    example_options: ClassVar[dict[str, Any]] = {"no_rope_layers": [1, 0]}


class Starcoder2Examples(RopeExamples):
    adapter = Starcoder2Adapter

    example_class = Starcoder2Config

    example_options: ClassVar[dict[str, Any]] = {"sliding_window": 4, "tie_word_embeddings": False}


class RopeLayoutExamples(RopeExamples):
    adapter = RopeLayoutAdapter

    #: Real-checkpoint switches on the example config, by a short id (the kit's ``conformance_configs``).
    variants: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        example = cls.example_config()
        return {name: type(example)(**{**example.to_diff_dict(), **changes}) for name, changes in cls.variants.items()}


class PhiExamples(RopeLayoutExamples):
    adapter = PhiAdapter

    example_class = PhiConfig

    example_options: ClassVar[dict[str, Any]] = {
        "hidden_act": "gelu_new",
        "rope_parameters": {"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.5},
    }

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        # phi-2: head_dim 80 with partial_rotary_factor 0.4 (rotary_dim 32), multi-head attention.
        "phi-2-style": {
            "hidden_size": 80,
            "num_key_value_heads": 4,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.4},
        },
        # The switch PhiConfig offers for per-head q/k LayerNorms.
        "phi-qk-layernorm": {"qk_layernorm": True},
    }


class StableLmExamples(RopeLayoutExamples):
    adapter = StableLmAdapter

    example_class = StableLmConfig

    example_options: ClassVar[dict[str, Any]] = {
        "use_qkv_bias": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.25},
    }

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        # stablelm-3b-4e1t: no q/k/v biases, multi-head attention.
        "stablelm-3b-4e1t-style": {"use_qkv_bias": False, "num_key_value_heads": 4},
        # stablelm-2-12b: parallel residual on one shared norm, per-head q/k LayerNorms, GQA, no q/k/v biases.
        "stablelm-2-12b-style": {"use_parallel_residual": True, "qk_layernorm": True, "use_qkv_bias": False},
    }


class CohereExamples(RopeLayoutExamples):
    adapter = CohereAdapter

    example_class = CohereConfig

    example_options: ClassVar[dict[str, Any]] = {"logit_scale": 0.25, "tie_word_embeddings": True}

    #: c4ai-command-r-plus: q/k norms over ``[heads, d_head]``, logit_scale 0.8333.
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "command-r-plus-style": {"use_qk_norm": True, "logit_scale": 0.8333}
    }


class Cohere2Examples(CohereExamples):
    adapter = Cohere2Adapter

    example_class = Cohere2Config

    example_options: ClassVar[dict[str, Any]] = {
        "logit_scale": 0.25,
        "tie_word_embeddings": True,
        "sliding_window": 4,
        "layer_types": ["sliding_attention", "full_attention"],
    }

    #: c4ai-command-r7b: three sliding-window (RoPE) layers, then one global layer (no positions).
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "command-r7b-style": {"num_hidden_layers": 4, "layer_types": None, "sliding_window_pattern": 4}
    }


class Glm4Examples(RopeLayoutExamples):
    adapter = Glm4Adapter

    example_class = Glm4Config

    example_options: ClassVar[dict[str, Any]] = {"head_dim": 16}


class GlmExamples(RopeLayoutExamples):
    adapter = GlmAdapter

    example_class = GlmConfig

    example_options: ClassVar[dict[str, Any]] = {"head_dim": 16}


class RopeMoEExamples(RopeExamples):
    adapter = RopeMoEAdapter

    #: real-checkpoint switches, by a short id: run by the conformance kit on tiny configs (``conformance_configs``)
    checkpoint_variants: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        example = cls.example_config()
        return {
            name: type(example)(**{**example.to_diff_dict(), **changes})
            for name, changes in cls.checkpoint_variants.items()
        }


class OlmoeExamples(RopeMoEExamples):
    adapter = OlmoeAdapter

    example_class = OlmoeConfig

    example_options: ClassVar[dict[str, Any]] = {"num_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 32}

    checkpoint_variants: ClassVar[dict[str, dict[str, Any]]] = {
        # OLMoE-1B-7B-0924: 64 experts, 8 per token, no renormalization, untied, no clip_qkv
        "olmoe-1b-7b": {"num_experts": 8, "num_experts_per_tok": 4, "norm_topk_prob": False, "clip_qkv": None},
    }


class Qwen2MoeExamples(RopeMoEExamples):
    adapter = Qwen2MoeAdapter

    example_class = Qwen2MoeConfig

    example_options: ClassVar[dict[str, Any]] = {**TINY_MOE, "shared_expert_intermediate_size": 48}

    checkpoint_variants: ClassVar[dict[str, dict[str, Any]]] = {
        # Qwen1.5-MoE-A2.7B / Qwen2-57B-A14B route without renormalizing; some configs make layers dense
        "qwen2-moe-dense-first": {"decoder_sparse_step": 2, "norm_topk_prob": False},
        "qwen2-moe-mlp-only-last": {"mlp_only_layers": [1], "norm_topk_prob": True},
    }


class Qwen3MoeExamples(RopeMoEExamples):
    adapter = Qwen3MoeAdapter

    example_class = Qwen3MoeConfig

    example_options: ClassVar[dict[str, Any]] = {**TINY_MOE, "head_dim": 16, "norm_topk_prob": True}

    checkpoint_variants: ClassVar[dict[str, dict[str, Any]]] = {
        # Qwen3-30B-A3B / 235B-A22B: 128 experts, 8 per token, renormalized; tied in no published MoE size
        "qwen3-moe-30b-a3b": {"num_experts": 8, "num_experts_per_tok": 4, "norm_topk_prob": True},
        "qwen3-moe-dense-first": {"mlp_only_layers": [0], "norm_topk_prob": False},
    }


class PhimoeExamples(RopeMoEExamples):
    adapter = PhimoeAdapter

    example_class = PhimoeConfig

    example_options: ClassVar[dict[str, Any]] = {
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "attention_bias": True,
        "lm_head_bias": True,
    }

    checkpoint_variants: ClassVar[dict[str, dict[str, Any]]] = {
        # Phi-3.5-MoE-instruct: LongRoPE with short/long mscales, a (wide) sliding window, jitter settings
        "phi3.5-moe": {
            "rope_parameters": {
                "rope_type": "longrope",
                "rope_theta": 10_000.0,
                "short_factor": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7],
                "long_factor": [2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7],
                "short_mscale": 1.243,
                "long_mscale": 1.243,
                "original_max_position_embeddings": 8,
            },
            "sliding_window": 6,
            "router_jitter_noise": 0.01,
            "input_jitter_noise": 0.01,
        },
    }


class GraniteMoeExamples(RopeMoEExamples):
    adapter = GraniteMoeAdapter

    example_class = GraniteMoeConfig

    example_options: ClassVar[dict[str, Any]] = {
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "embedding_multiplier": 12.0,
        "residual_multiplier": 0.22,
        "attention_multiplier": 0.0078125,
        "logits_scaling": 6.0,
        "initializer_range": 0.1,  # as Granite's configs; the kit's sensitize leaves 3-D expert tensors at it
    }

    checkpoint_variants: ClassVar[dict[str, dict[str, Any]]] = {
        # granite-3.0-1b-a400m: tied embeddings, 32 experts, 8 per token, these multipliers
        "granite-3.0-moe": {
            "tie_word_embeddings": True,
            "num_local_experts": 8,
            "num_experts_per_tok": 4,
            "embedding_multiplier": 12.0,
            "residual_multiplier": 0.22,
            "attention_multiplier": 0.015625,
            "logits_scaling": 6.0,
        },
    }


class Llama4Examples(RopeExamples):
    adapter = Llama4Adapter
    #: HF's Llama 4 scales queries by a temperature of the index in the (padded) row, not of the position.
    left_padding_invariant = False

    example_class = Llama4TextConfig

    example_options: ClassVar[dict[str, Any]] = {
        "num_hidden_layers": 3,
        "head_dim": 16,
        "intermediate_size": 48,  # experts and the shared expert
        "intermediate_size_mlp": 80,  # dense layers
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "interleave_moe_layer_step": 2,  # layer 1 MoE, layers 0 and 2 dense
        "no_rope_layers": [1, 0, 1],  # 1 = RoPE: layer 1 is a NoPE layer
        "use_qk_norm": True,
        "attention_chunk_size": 4,
        "attn_temperature_tuning": True,
        "floor_scale": 2,  # the temperature changes every 2 positions (8192 in the checkpoints)
        "attn_scale": 0.5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10_000.0},
        # The kit's sensitize redraws nn.Linear weights only; the 3-D expert tensors keep HF's init.
        "initializer_range": 0.125,
    }

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """The published checkpoints' switches on tiny two-layer configs (NoPE every 2nd layer, not every 4th):
        Scout (every layer MoE, one expert a token, q/k norm, Llama-3 RoPE scaling) and Maverick (MoE every
        other layer, no q/k norm, untied embeddings)."""
        scout = {
            "interleave_moe_layer_step": 1,
            "use_qk_norm": True,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500_000.0,
                "factor": 16.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 1.0,
                "original_max_position_embeddings": 8,
            },
        }
        maverick = {"interleave_moe_layer_step": 2, "use_qk_norm": False, "tie_word_embeddings": False}
        return {
            "llama4-scout-style": cls._checkpoint_style(scout),
            "llama4-maverick-style": cls._checkpoint_style(maverick),
        }

    @classmethod
    def _checkpoint_style(cls, changes: dict[str, Any]) -> Any:
        """The example config on two layers, one expert a token, NoPE layers from the interval, with ``changes``."""
        values = {**TINY, **cls.example_options, "num_hidden_layers": 2, "num_experts_per_tok": 1}
        values |= {"no_rope_layers": None, "no_rope_layer_interval": 2, **changes}
        return cls.example_class(**values, architectures=[cls.adapter.architectures[0]])


class Glm4MoeExamples(RopeExamples):
    adapter = Glm4MoeAdapter

    example_class = Glm4MoeConfig

    example_options: ClassVar[dict[str, Any]] = {
        "head_dim": 16,
        "attention_bias": True,
        "use_qk_norm": True,
        "moe_intermediate_size": 32,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "n_group": 2,  # grouped top-k sums each group's best two experts: ≥ 2 experts a group
        "topk_group": 1,
        "first_k_dense_replace": 1,
        "routed_scaling_factor": 2.5,
        "norm_topk_prob": True,
        # The kit's sensitize redraws nn.Linear weights only; the router's weight and the 3-D expert tensors
        # keep HF's init, so give that init the same scale (1/√d_model) to make routing and experts matter.
        "initializer_range": 0.125,
    }

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """The published checkpoints' switches: GLM-4.5 (q/k norms, one expert group, ``routed_scaling_factor``
        2.5, q/k/v biases, untied embeddings) and GLM-4.5-Air (the same without q/k norms)."""
        glm45 = {
            "use_qk_norm": True,
            "n_group": 1,
            "topk_group": 1,
            "routed_scaling_factor": 2.5,
            "first_k_dense_replace": 1,
            "norm_topk_prob": True,
            "attention_bias": True,
            "tie_word_embeddings": False,
        }
        config = cls.example_config()
        return {
            "glm4.5-style": type(config)(**{**config.to_diff_dict(), **glm45}),
            "glm4.5-air-style": type(config)(**{**config.to_diff_dict(), **glm45, "use_qk_norm": False}),
        }


class GptOssExamples(RopeExamples):
    adapter = GptOssAdapter

    example_class = GptOssConfig

    example_options: ClassVar[dict[str, Any]] = {
        "intermediate_size": 32,
        "head_dim": 16,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": 4,
        "layer_types": ["sliding_attention", "full_attention"],
        "max_position_embeddings": 512,
        "rope_parameters": GPT_OSS_YARN,
        # HF draws the 3-D expert weights, the router and the sinks with this std; 0.02 would leave the experts
        # too small to matter on a tiny model (the kit redraws only 2-D linear weights).
        "initializer_range": 0.2,
    }

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """Switches of the published checkpoints the example does not turn: HF's default layer types (sliding
        first, alternating, here over 4 layers) with top-4 routing as in gpt-oss-20b/120b, and a SwiGLU limit
        small enough to clamp on a tiny model (the checkpoints' 7.0 clamps their large activations)."""
        base = cls.example_config().to_diff_dict()
        return {
            "gpt-oss-alternating-4l-top4": GptOssConfig(
                **{
                    **base,
                    "num_hidden_layers": 4,
                    "layer_types": None,
                    "sliding_window": 3,
                    "num_local_experts": 8,
                    "num_experts_per_tok": 4,
                }
            ),
            "gpt-oss-clamped-swiglu": GptOssConfig(**{**base, "swiglu_limit": 0.3, "swiglu_alpha": 1.702}),
        }


class RopeVariantExamples(RopeExamples):
    """Examples with real-checkpoint switches on the example config (``variants``, by a short id), run by the kit
    as ``conformance_configs()``. A base class: each subclass names its adapter."""

    variants: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        example = cls.example_config()
        return {name: type(example)(**{**example.to_diff_dict(), **changes}) for name, changes in cls.variants.items()}


def llama3_rope(theta: float) -> dict[str, Any]:
    """Llama-3 RoPE scaling (factor 8) with a tiny original context, so it bends the tiny models' frequencies."""
    return {
        "rope_type": "llama3",
        "rope_theta": theta,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8,
    }


#: HunYuan's checkpoints: HF's "dynamic" type with a fixed NTK ``alpha`` (static frequencies, base × alpha^(d/(d-2))).
HUNYUAN_NTK_ALPHA = {"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0, "rope_theta": 10_000.0}


class ApertusExamples(RopeVariantExamples):
    adapter = ApertusAdapter

    example_class = ApertusConfig

    example_options: ClassVar[dict[str, Any]] = {
        "hidden_act": "xielu",
        "rope_parameters": {"rope_type": "default", "rope_theta": 10_000.0},
    }

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        # Apertus-8B/70B: Llama-3 RoPE scaling (factor 8), GQA, untied embeddings. Their base of 12M would leave a
        # 16-wide head's slowest pair unrotated within fp32 over a short prompt (the kit measures rotary_dim from
        # hook_rot_q): base 1M here
        "apertus-8b-style": {"rope_parameters": llama3_rope(1_000_000.0), "tie_word_embeddings": False},
    }


class Ernie4_5Examples(RopeVariantExamples):
    adapter = Ernie4_5Adapter

    example_class = Ernie4_5Config

    example_options: ClassVar[dict[str, Any]] = {"head_dim": 16, "use_bias": True, "tie_word_embeddings": False}

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        # ERNIE-4.5-0.3B: no biases, tied embeddings, head_dim 128 ≠ 1024 / 16
        "ernie4.5-0.3b-style": {"use_bias": False, "tie_word_embeddings": True, "head_dim": 32},
    }


class SeedOssExamples(RopeVariantExamples):
    adapter = SeedOssAdapter

    example_class = SeedOssConfig

    example_options: ClassVar[dict[str, Any]] = {
        "head_dim": 24,
        "attention_bias": True,
        "attention_out_bias": True,
        "mlp_bias": True,
        "tie_word_embeddings": False,
    }

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        # Seed-OSS-36B: q/k/v biases only, dropouts 0.1 (inactive in eval), base 1e7
        "seed-oss-36b-style": {
            "attention_out_bias": False,
            "mlp_bias": False,
            "attention_dropout": 0.1,
            "residual_dropout": 0.1,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10_000_000.0},
        },
    }


class NemotronExamples(RopeVariantExamples):
    adapter = NemotronAdapter

    example_class = NemotronConfig

    example_options: ClassVar[dict[str, Any]] = {"hidden_act": "relu2", "tie_word_embeddings": False}

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        # Minitron-8B / Nemotron-4: head_dim 128 ≠ d_model / n_heads, partial rotary 0.5, base 10000
        "minitron-8b-style": {
            "head_dim": 24,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.5},
        },
    }


class Exaone4Examples(RopeVariantExamples):
    adapter = Exaone4Adapter

    example_class = Exaone4Config

    example_options: ClassVar[dict[str, Any]] = {
        "sliding_window": 4,
        "layer_types": ["sliding_attention", "full_attention"],
        "tie_word_embeddings": False,
    }

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        # EXAONE-4.0-32B: three sliding (RoPE) layers to one global (no positions), Llama-3 RoPE scaling
        "exaone4-32b-style": {
            "num_hidden_layers": 4,
            "layer_types": None,
            "sliding_window_pattern": 4,
            "rope_parameters": llama3_rope(1_000_000.0),
        },
        # EXAONE-4.0-1.2B: no sliding window (RoPE in every layer), tied embeddings
        "exaone4-1.2b-style": {
            "sliding_window": None,
            "layer_types": ["full_attention", "full_attention"],
            "tie_word_embeddings": True,
            "rope_parameters": llama3_rope(1_000_000.0),
        },
    }


class PersimmonExamples(RopeVariantExamples):
    adapter = PersimmonAdapter

    example_class = PersimmonConfig

    example_options: ClassVar[dict[str, Any]] = {"num_key_value_heads": None}  # multi-head only

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        # persimmon-8b: q/k LayerNorms, partial rotary 0.5, base 25000
        "persimmon-8b-style": {
            "rope_parameters": {"rope_type": "default", "rope_theta": 25_000.0, "partial_rotary_factor": 0.5},
        },
        # the switch PersimmonConfig offers: no q/k LayerNorms
        "persimmon-without-qk-layernorm": {"qk_layernorm": False},
    }


class HunYuanDenseV1Examples(RopeVariantExamples):
    adapter = HunYuanDenseV1Adapter

    example_class = HunYuanDenseV1Config

    example_options: ClassVar[dict[str, Any]] = {"head_dim": 16, "tie_word_embeddings": False}

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        # Hunyuan-7B-Instruct: NTK-alpha RoPE, tied embeddings
        "hunyuan-7b-style": {"rope_parameters": HUNYUAN_NTK_ALPHA, "tie_word_embeddings": True},
    }


class HunYuanMoEV1Examples(RopeVariantExamples):
    adapter = HunYuanMoEV1Adapter

    example_class = HunYuanMoEV1Config

    example_options: ClassVar[dict[str, Any]] = {
        "head_dim": 16,
        "intermediate_size": 32,  # experts and the shared MLP
        "num_experts": 4,
        "moe_topk": 2,
        "tie_word_embeddings": False,
        # HF draws the 3-D expert tensors with this std (the kit redraws only 2-D weights): make them matter
        "initializer_range": 0.125,
    }

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        # Hunyuan-A13B: top-k given per layer (a list), NTK-alpha RoPE; here 8 experts, top 3
        "hunyuan-a13b-style": {"num_experts": 8, "moe_topk": [3, 3], "rope_parameters": HUNYUAN_NTK_ALPHA},
        # a per-layer list whose entries differ (the form HF's config allows)
        "hunyuan-moe-topk-per-layer": {"moe_topk": [1, 3]},
    }


#: MiniMax-Text-01's skip scale: ``α = (2 · 80 layers) ** 0.25`` on every norm's output it carries on, ``β = 1``.
MINIMAX_ALPHA = 3.5565588200778455


class MiniMaxExamples(RopeVariantExamples):
    adapter = MiniMaxAdapter

    example_class = MiniMaxConfig

    example_options: ClassVar[dict[str, Any]] = {
        "num_hidden_layers": 3,
        # lightning, softmax, lightning: a recurrent state flows past an attention layer (MiniMax-Text-01 has one
        # softmax layer in eight)
        "layer_types": ["linear_attention", "full_attention", "linear_attention"],
        "head_dim": 16,
        "block_size": 4,  # prompts span several blocks of HF's blockwise scan (256 in the checkpoint)
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "intermediate_size": 32,
        "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10_000.0},
        **{f"{kind}_alpha_factor": MINIMAX_ALPHA for kind in ("full_attn", "linear_attn", "mlp")},
        # HF draws the 3-D expert tensors with this std (the kit redraws only 2-D weights): make them matter
        "initializer_range": 0.125,
    }

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        # every multiplier different (HF's config allows it): α and β of each sublayer reach their own hooks
        "minimax-distinct-scales": {
            "full_attn_alpha_factor": 1.5,
            "full_attn_beta_factor": 0.5,
            "linear_attn_alpha_factor": 2.0,
            "linear_attn_beta_factor": 0.75,
            "mlp_alpha_factor": 1.25,
            "mlp_beta_factor": 1.5,
        },
        # softmax attention first, two lightning layers in a row (where HF's cache bookkeeping skips layers)
        "minimax-attention-first": {"layer_types": ["full_attention", "linear_attention", "linear_attention"]},
    }


#: The examples of every adapter the family registers.
EXAMPLES = (
    RopeExamples,
    LlamaExamples,
    MistralExamples,
    Qwen2Examples,
    Qwen3Examples,
    Phi3Examples,
    Olmo2Examples,
    Gemma2Examples,
    Gemma3Examples,
    MixtralExamples,
    GemmaExamples,
    GraniteExamples,
    OlmoExamples,
    Olmo3Examples,
    SmolLM3Examples,
    Starcoder2Examples,
    RopeLayoutExamples,
    PhiExamples,
    StableLmExamples,
    CohereExamples,
    Cohere2Examples,
    Glm4Examples,
    GlmExamples,
    RopeMoEExamples,
    OlmoeExamples,
    Qwen2MoeExamples,
    Qwen3MoeExamples,
    PhimoeExamples,
    GraniteMoeExamples,
    Llama4Examples,
    Glm4MoeExamples,
    GptOssExamples,
    ApertusExamples,
    Ernie4_5Examples,
    SeedOssExamples,
    NemotronExamples,
    Exaone4Examples,
    PersimmonExamples,
    HunYuanDenseV1Examples,
    HunYuanMoEV1Examples,
    MiniMaxExamples,
)
