"""bridge-llama: the RoPE family (Llama, Mistral, Qwen2/3, Gemma 1/2/3, Phi-3, OLMo 1/2/3, Mixtral, Granite, SmolLM3,
StarCoder2) for bridge."""

from bridge_llama.adapters import (
    ADAPTERS,
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
from bridge_llama.components import GateUpMLP, QKNormAttention, SandwichBlock
from bridge_llama.dense_adapters import (
    GemmaAdapter,
    GraniteAdapter,
    Olmo3Adapter,
    OlmoAdapter,
    SmolLM3Adapter,
    Starcoder2Adapter,
)
from bridge_llama.dense_components import ClippedSplitQKV, ScaledEmbedding, ScaledResidualBlock

__all__ = [
    "ADAPTERS",
    "ClippedSplitQKV",
    "GateUpMLP",
    "Gemma2Adapter",
    "Gemma3Adapter",
    "GemmaAdapter",
    "GraniteAdapter",
    "LlamaAdapter",
    "MistralAdapter",
    "MixtralAdapter",
    "Olmo2Adapter",
    "Olmo3Adapter",
    "OlmoAdapter",
    "Phi3Adapter",
    "QKNormAttention",
    "Qwen2Adapter",
    "Qwen3Adapter",
    "RopeAdapter",
    "SandwichBlock",
    "ScaledEmbedding",
    "ScaledResidualBlock",
    "SmolLM3Adapter",
    "Starcoder2Adapter",
]
