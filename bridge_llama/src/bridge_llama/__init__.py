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
from bridge_llama.dense_components import ClippedSplitQKV, ScaledEmbedding, ScaledResidualBlock
from bridge_llama.glm4_moe import Glm4MoeAdapter
from bridge_llama.gpt_oss import GptOssAdapter
from bridge_llama.hunyuan import HunYuanDenseV1Adapter, HunYuanMoEV1Adapter, PostRotaryQKNormAttention
from bridge_llama.lightning import LightningAttention
from bridge_llama.llama4 import Llama4Adapter, Llama4Block, Llama4MoE, llama4_routing
from bridge_llama.minimax import MiniMaxAdapter, ScaledSkipBlock, ScaledSkipLinearBlock
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
    PersimmonAdapter,
    PhiAdapter,
    RopeLayoutAdapter,
    StableLmAdapter,
)

__all__ = [
    "ADAPTERS",
    "PARALLEL_ADAPTERS",
    "ApertusAdapter",
    "ClippedSplitQKV",
    "Cohere2Adapter",
    "CohereAdapter",
    "Ernie4_5Adapter",
    "Exaone4Adapter",
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
    "HunYuanDenseV1Adapter",
    "HunYuanMoEV1Adapter",
    "LightningAttention",
    "Llama4Adapter",
    "Llama4Block",
    "Llama4MoE",
    "LlamaAdapter",
    "MiniMaxAdapter",
    "MistralAdapter",
    "MixtralAdapter",
    "NemotronAdapter",
    "Olmo2Adapter",
    "Olmo3Adapter",
    "OlmoAdapter",
    "OlmoeAdapter",
    "PersimmonAdapter",
    "Phi3Adapter",
    "PhiAdapter",
    "PhimoeAdapter",
    "PostRotaryQKNormAttention",
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
    "ScaledSkipBlock",
    "ScaledSkipLinearBlock",
    "SeedOssAdapter",
    "SmolLM3Adapter",
    "StableLmAdapter",
    "Starcoder2Adapter",
    "llama4_routing",
]
