"""bridge-llama: the RoPE family (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, OLMo-2, Mixtral, Phi-1/2, StableLM,
Cohere 1/2, GLM, GLM-4) for bridge."""

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
from bridge_llama.parallel_adapters import (
    PARALLEL_ADAPTERS,
    Cohere2Adapter,
    CohereAdapter,
    Glm4Adapter,
    GlmAdapter,
    PhiAdapter,
    RopeLayoutAdapter,
    StableLmAdapter,
)

__all__ = [
    "ADAPTERS",
    "PARALLEL_ADAPTERS",
    "Cohere2Adapter",
    "CohereAdapter",
    "GateUpMLP",
    "Gemma2Adapter",
    "Gemma3Adapter",
    "Glm4Adapter",
    "GlmAdapter",
    "LlamaAdapter",
    "MistralAdapter",
    "MixtralAdapter",
    "Olmo2Adapter",
    "Phi3Adapter",
    "PhiAdapter",
    "QKNormAttention",
    "Qwen2Adapter",
    "Qwen3Adapter",
    "RopeAdapter",
    "RopeLayoutAdapter",
    "SandwichBlock",
    "StableLmAdapter",
]
