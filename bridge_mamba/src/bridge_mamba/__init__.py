"""bridge-mamba: the state-space family (Mamba, Mamba-2) for bridge."""

from bridge_mamba.adapters import FalconMambaAdapter, Mamba2Adapter, MambaAdapter
from bridge_mamba.blocks import SSMBlock
from bridge_mamba.catalog import ADAPTERS, HYBRID_ADAPTERS, SSM_ADAPTERS
from bridge_mamba.deltanet import GatedDeltaNet
from bridge_mamba.hybrid_adapters import (
    BambaAdapter,
    FalconH1Adapter,
    GraniteMoeHybridAdapter,
    JambaAdapter,
    Lfm2Adapter,
    Lfm2MoeAdapter,
    NemotronHAdapter,
    Qwen3NextAdapter,
    Qwen35Adapter,
    Qwen35MoeAdapter,
    Zamba2Adapter,
)
from bridge_mamba.mixers import Mamba1Mixer, Mamba2Mixer, effective_attention
from bridge_mamba.short_conv import ShortConv

__all__ = [
    "ADAPTERS",
    "HYBRID_ADAPTERS",
    "SSM_ADAPTERS",
    "BambaAdapter",
    "FalconH1Adapter",
    "FalconMambaAdapter",
    "GatedDeltaNet",
    "GraniteMoeHybridAdapter",
    "JambaAdapter",
    "Lfm2Adapter",
    "Lfm2MoeAdapter",
    "Mamba1Mixer",
    "Mamba2Adapter",
    "Mamba2Mixer",
    "MambaAdapter",
    "NemotronHAdapter",
    "Qwen3NextAdapter",
    "Qwen35Adapter",
    "Qwen35MoeAdapter",
    "SSMBlock",
    "ShortConv",
    "Zamba2Adapter",
    "effective_attention",
]
