"""Examples of the bridge_encoders adapters: tiny configs and inputs for the conformance kit and tests."""

from __future__ import annotations

from transformers import BertConfig, DistilBertConfig, RobertaConfig, XLMRobertaConfig

from bridge.kernel import TINY_VOCAB, Examples
from bridge_encoders.encoders import BertAdapter, DistilBertAdapter, RobertaAdapter, XLMRobertaAdapter

#: The sizes every tiny encoder shares.
TINY_ENCODER = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
    pad_token_id=0,
    num_labels=3,
)


class BertExamples(Examples):
    adapter = BertAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> BertConfig:
        return BertConfig(**TINY_ENCODER, architectures=[architecture or cls.adapter.architectures[0]])


class RobertaExamples(Examples):
    adapter = RobertaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> RobertaConfig:
        return RobertaConfig(**TINY_ENCODER, architectures=[architecture or cls.adapter.architectures[0]])


class XLMRobertaExamples(Examples):
    adapter = XLMRobertaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> XLMRobertaConfig:
        return XLMRobertaConfig(**TINY_ENCODER, architectures=[architecture or cls.adapter.architectures[0]])


class DistilBertExamples(Examples):
    adapter = DistilBertAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> DistilBertConfig:
        return DistilBertConfig(
            vocab_size=TINY_VOCAB,
            dim=32,
            n_layers=2,
            n_heads=4,
            hidden_dim=64,
            max_position_embeddings=40,
            pad_token_id=0,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


#: The examples of every adapter the family registers.
EXAMPLES: tuple[type[Examples], ...] = (BertExamples, RobertaExamples, XLMRobertaExamples, DistilBertExamples)

__all__ = ["EXAMPLES"]
