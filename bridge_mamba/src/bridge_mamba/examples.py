"""Examples of the bridge_mamba adapters: tiny configs and inputs for the conformance kit and tests."""

from __future__ import annotations

from transformers import Mamba2Config, MambaConfig

from bridge.kernel import TINY_SPECIAL_IDS, TINY_VOCAB, Examples
from bridge_mamba.adapters import Mamba2Adapter, MambaAdapter


class MambaExamples(Examples):
    adapter = MambaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> MambaConfig:
        return MambaConfig(
            num_hidden_layers=2,
            hidden_size=32,
            state_size=8,
            expand=2,
            conv_kernel=4,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


class Mamba2Examples(Examples):
    adapter = Mamba2Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Mamba2Config:
        # chunk_size 4 < the kit's 12 tokens: the chunked scan crosses chunks and pads the last one.
        return Mamba2Config(
            num_hidden_layers=2,
            hidden_size=32,
            expand=2,
            num_heads=8,
            head_dim=8,
            n_groups=2,
            state_size=8,
            conv_kernel=4,
            chunk_size=4,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


#: The examples of every adapter the family registers.
EXAMPLES = (
    MambaExamples,
    Mamba2Examples,
)
