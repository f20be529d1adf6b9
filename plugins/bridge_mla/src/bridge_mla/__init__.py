"""bridge-mla: the multi-head latent attention family (DeepSeek-V2, V3, V3.2, GLM-MoE-DSA) for bridge."""

from bridge_mla.adapters import ADAPTERS, DeepseekV2Adapter, DeepseekV3Adapter, DeepseekV32Adapter, GlmMoeDsaAdapter
from bridge_mla.attention import MLAAttention
from bridge_mla.dsa import DSAAttention, TopkPassingBlock, fold_index_mask
from bridge_mla.moe import SharedExperts, deepseek_v2_routing, deepseek_v3_routing

__all__ = [
    "ADAPTERS",
    "DSAAttention",
    "DeepseekV2Adapter",
    "DeepseekV3Adapter",
    "DeepseekV32Adapter",
    "GlmMoeDsaAdapter",
    "MLAAttention",
    "SharedExperts",
    "TopkPassingBlock",
    "deepseek_v2_routing",
    "deepseek_v3_routing",
    "fold_index_mask",
]
