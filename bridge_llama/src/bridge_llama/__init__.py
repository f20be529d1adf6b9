"""bridge-llama: the RoPE family (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, OLMo-2, Mixtral, GPT-OSS) for bridge."""

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
from bridge_llama.gpt_oss import GptOssAdapter

__all__ = [
    "ADAPTERS",
    "GateUpMLP",
    "Gemma2Adapter",
    "Gemma3Adapter",
    "GptOssAdapter",
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
]
