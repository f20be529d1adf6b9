"""Every adapter of the family: the pure SSMs and the hybrids."""

from bridge_mamba.adapters import SSM_ADAPTERS
from bridge_mamba.hybrid_adapters import HYBRID_ADAPTERS

ADAPTERS = (*SSM_ADAPTERS, *HYBRID_ADAPTERS)

__all__ = ["ADAPTERS", "HYBRID_ADAPTERS", "SSM_ADAPTERS"]
