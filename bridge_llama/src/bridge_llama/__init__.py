"""bridge-llama: the RoPE family for bridge; every architecture it bridges is in ``ADAPTERS``."""

from bridge.components import QKNormAttention
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
from bridge_llama.catalog import ADAPTERS
from bridge_llama.components import GateUpMLP, SandwichBlock
from bridge_llama.dense_adapters import (
    GemmaAdapter,
    GraniteAdapter,
    Olmo3Adapter,
    OlmoAdapter,
    SmolLM3Adapter,
    Starcoder2Adapter,
)
from bridge_llama.dense_components import ClippedSplitQKV, ScaledEmbedding, ScaledResidualBlock
from bridge_llama.glm4_moe import Glm4MoeAdapter
from bridge_llama.gpt_oss import GptOssAdapter
from bridge_llama.llama4 import Llama4Adapter, Llama4Block, Llama4MoE, llama4_routing
from bridge_llama.moe_adapters import (
    GraniteMoeAdapter,
    OlmoeAdapter,
    PhimoeAdapter,
    Qwen2MoeAdapter,
    Qwen3MoeAdapter,
    RopeMoEAdapter,
)
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
    "ClippedSplitQKV",
    "Cohere2Adapter",
    "CohereAdapter",
    "GateUpMLP",
    "Gemma2Adapter",
    "Gemma3Adapter",
    "GemmaAdapter",
    "Glm4Adapter",
    "Glm4MoeAdapter",
    "GlmAdapter",
    "GptOssAdapter",
    "GraniteAdapter",
    "GraniteMoeAdapter",
    "Llama4Adapter",
    "Llama4Block",
    "Llama4MoE",
    "LlamaAdapter",
    "MistralAdapter",
    "MixtralAdapter",
    "Olmo2Adapter",
    "Olmo3Adapter",
    "OlmoAdapter",
    "OlmoeAdapter",
    "Phi3Adapter",
    "PhiAdapter",
    "PhimoeAdapter",
    "QKNormAttention",
    "Qwen2Adapter",
    "Qwen2MoeAdapter",
    "Qwen3Adapter",
    "Qwen3MoeAdapter",
    "RopeAdapter",
    "RopeLayoutAdapter",
    "RopeMoEAdapter",
    "SandwichBlock",
    "ScaledEmbedding",
    "ScaledResidualBlock",
    "SmolLM3Adapter",
    "StableLmAdapter",
    "Starcoder2Adapter",
    "llama4_routing",
]
