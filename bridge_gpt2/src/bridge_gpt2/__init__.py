"""bridge-gpt2: the fused-QKV family (GPT-2, GPT-NeoX/Pythia, GPT-BigCode) and the split-q/k/v
layouts with learned or sinusoidal positions (GPT-Neo, OPT, XGLM) for bridge."""

from bridge_gpt2.adapters import ADAPTERS, GPT2Adapter, GPTBigCodeAdapter, GPTNeoXAdapter
from bridge_gpt2.split_qkv_adapters import GPTNeoAdapter, OPTAdapter, XGLMAdapter

__all__ = [
    "ADAPTERS",
    "GPT2Adapter",
    "GPTBigCodeAdapter",
    "GPTNeoAdapter",
    "GPTNeoXAdapter",
    "OPTAdapter",
    "XGLMAdapter",
]
