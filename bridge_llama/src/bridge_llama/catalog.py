"""Every adapter of the RoPE family, in registration order (what the plugin registers and the tests sweep)."""

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
from bridge_llama.dense_adapters import DENSE_ADAPTERS
from bridge_llama.glm4_moe import Glm4MoeAdapter
from bridge_llama.gpt_oss import GptOssAdapter
from bridge_llama.hunyuan import HUNYUAN_ADAPTERS
from bridge_llama.llama4 import Llama4Adapter
from bridge_llama.minimax import MiniMaxAdapter
from bridge_llama.moe_adapters import MOE_ADAPTERS
from bridge_llama.parallel_adapters import PARALLEL_ADAPTERS

ADAPTERS: tuple[type[RopeAdapter], ...] = (
    LlamaAdapter,
    MistralAdapter,
    Qwen2Adapter,
    Qwen3Adapter,
    Gemma2Adapter,
    Gemma3Adapter,
    Phi3Adapter,
    Olmo2Adapter,
    MixtralAdapter,
    *DENSE_ADAPTERS,
    *PARALLEL_ADAPTERS,
    *MOE_ADAPTERS,
    Llama4Adapter,
    Glm4MoeAdapter,
    GptOssAdapter,
    *HUNYUAN_ADAPTERS,
    MiniMaxAdapter,
)
