"""bridge-llama: the RoPE family (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, OLMo-2, Mixtral, Llama 4, GLM-4-MoE)
for bridge."""

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
from bridge_llama.glm4_moe import Glm4MoeAdapter
from bridge_llama.llama4 import Llama4Adapter, Llama4Block, Llama4MoE, llama4_routing

__all__ = [
    "ADAPTERS",
    "GateUpMLP",
    "Gemma2Adapter",
    "Gemma3Adapter",
    "Glm4MoeAdapter",
    "Llama4Adapter",
    "Llama4Block",
    "Llama4MoE",
    "LlamaAdapter",
    "MistralAdapter",
    "MixtralAdapter",
    "Olmo2Adapter",
    "Phi3Adapter",
    "QKNormAttention",
    "Qwen2Adapter",
    "Qwen3Adapter",
    "RopeAdapter",
    "SandwichBlock",
    "llama4_routing",
]
