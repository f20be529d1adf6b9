"""bridge-llama: the RoPE family (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, OLMo-2, Mixtral) for bridge."""

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
from bridge_llama.moe_adapters import (
    GraniteMoeAdapter,
    OlmoeAdapter,
    PhimoeAdapter,
    Qwen2MoeAdapter,
    Qwen3MoeAdapter,
    RopeMoEAdapter,
)
from bridge_llama.scaled_residual import ScaledResidualBlock

__all__ = [
    "ADAPTERS",
    "GateUpMLP",
    "Gemma2Adapter",
    "Gemma3Adapter",
    "GraniteMoeAdapter",
    "LlamaAdapter",
    "MistralAdapter",
    "MixtralAdapter",
    "Olmo2Adapter",
    "OlmoeAdapter",
    "Phi3Adapter",
    "PhimoeAdapter",
    "QKNormAttention",
    "Qwen2Adapter",
    "Qwen2MoeAdapter",
    "Qwen3Adapter",
    "Qwen3MoeAdapter",
    "RopeAdapter",
    "RopeMoEAdapter",
    "SandwichBlock",
    "ScaledResidualBlock",
]
