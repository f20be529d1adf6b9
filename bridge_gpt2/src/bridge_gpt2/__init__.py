"""bridge-gpt2: the fused-QKV family (GPT-2, GPT-NeoX/Pythia, GPT-BigCode) and GPT-J's layout (GPT-J, CodeGen)
for bridge."""

from bridge_gpt2.adapters import ADAPTERS, GPT2Adapter, GPTBigCodeAdapter, GPTNeoXAdapter
from bridge_gpt2.gptj_adapters import CodeGenAdapter, GPTJAdapter

__all__ = ["ADAPTERS", "CodeGenAdapter", "GPT2Adapter", "GPTBigCodeAdapter", "GPTJAdapter", "GPTNeoXAdapter"]
