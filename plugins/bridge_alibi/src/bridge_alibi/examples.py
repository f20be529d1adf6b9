"""Examples of the bridge_alibi adapters: tiny configs and inputs for the conformance kit and tests."""

from __future__ import annotations

import os
from typing import Any

from torch import nn
from transformers import BloomConfig, FalconConfig, MptConfig

from bridge.kernel import TINY_SPECIAL_IDS, TINY_VOCAB, Examples
from bridge_alibi.adapters import BloomAdapter, FalconAdapter, MptAdapter, _drop_second_alibi


class BloomExamples(Examples):
    adapter = BloomAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> BloomConfig:
        return BloomConfig(
            n_layer=2,
            hidden_size=48,
            n_head=6,  # not a power of two: exercises ALiBi's interleaved extra slopes
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


class MptExamples(Examples):
    adapter = MptAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> MptConfig:
        return MptConfig(
            n_layers=2,
            d_model=32,
            n_heads=4,
            max_seq_len=64,
            vocab_size=TINY_VOCAB,
            attn_config={"clip_qkv": 0.08},  # small enough to clip some of the tiny model's q, k, v
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


class FalconExamples(Examples):
    adapter = FalconAdapter

    @classmethod
    def reference_model(cls, model_class: type, directory: str | os.PathLike) -> nn.Module:
        """The HF reference for conformance tests: eager attention, with ALiBi counted once.

        HF's eager Falcon-ALiBi folds ``alibi/√d`` into the mask it passes every layer *and* passes
        ``alibi`` to be added again. Zeroing that second copy leaves HF's own eager code computing
        ``softmax((q·k + alibi)/√d + causal)``, HF's SDPA semantics, while still returning ``attentions``.
        """
        reference = model_class.from_pretrained(directory, attn_implementation="eager").eval()
        if reference.config.alibi:
            for layer in reference.transformer.h:
                layer.register_forward_pre_hook(_drop_second_alibi, with_kwargs=True)
        return reference

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """Falcon-RW (ALiBi, multi-head, sequential), the "new decoder architecture" (grouped kv heads, two
        parallel layer norms) and rotary Falcon-7B style (multi-query, parallel, one shared layer norm)."""
        return {
            "falcon-rw": cls.example_config(multi_query=False, parallel_attn=False),
            "falcon-grouped": cls.example_config(new_decoder_architecture=True, num_kv_heads=2, num_attention_heads=4),
            "falcon-rotary": cls.example_config(alibi=False),
        }

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> FalconConfig:
        """Falcon with ALiBi, multi-query attention and parallel attention + MLP (the most unusual
        combination); ``overrides`` give the other variants (tests use them)."""
        values: dict[str, Any] = dict(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            alibi=True,
            multi_query=True,
            parallel_attn=True,
            bias=True,
            max_position_embeddings=64,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )
        values.update(overrides)
        return FalconConfig(**values)


#: The examples of every adapter the family registers.
EXAMPLES = (
    BloomExamples,
    MptExamples,
    FalconExamples,
)
