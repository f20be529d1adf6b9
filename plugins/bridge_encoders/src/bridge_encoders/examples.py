"""Examples of the bridge_encoders adapters: tiny configs and inputs for the conformance kit and tests."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers import (
    BartConfig,
    BertConfig,
    DistilBertConfig,
    HubertConfig,
    ModernBertConfig,
    MT5Config,
    RobertaConfig,
    T5Config,
    T5GemmaConfig,
    Wav2Vec2Config,
    WhisperConfig,
    XLMRobertaConfig,
)

from bridge import Adapter
from bridge.kernel import TINY_VOCAB, ExampleInput, Examples
from bridge_encoders.bart import BartAdapter
from bridge_encoders.encoders import BertAdapter, DistilBertAdapter, RobertaAdapter, XLMRobertaAdapter
from bridge_encoders.modernbert import ModernBertAdapter
from bridge_encoders.speech import HubertAdapter, Wav2Vec2Adapter, frames
from bridge_encoders.t5 import T5Adapter
from bridge_encoders.t5gemma import T5GemmaAdapter
from bridge_encoders.whisper import WhisperAdapter

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


class ModernBertExamples(Examples):
    adapter = ModernBertAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> ModernBertConfig:
        """A tiny ModernBERT with 3 layers: global attention in layers 0 and 2, a local window of 4 in layer 1
        (shorter than the kit's inputs, so the window matters). The classifier mean-pools the real tokens: with
        "cls" pooling a left-padded row's classification reads a padding position, where HF's eager and SDPA paths
        disagree (a padded query in a local layer whose window holds only padding has no key to attend to)."""
        return ModernBertConfig(
            vocab_size=TINY_VOCAB,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=64,
            global_attn_every_n_layers=2,
            local_attention=4,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
            num_labels=3,
            classifier_pooling="mean",
            architectures=[architecture or cls.adapter.architectures[0]],
        )


def random_tokens(batch: int, pos: int, seed: int) -> torch.Tensor:
    """Token ids ``[batch, pos]`` in ``1..TINY_VOCAB-1`` (never the padding id 0)."""
    return torch.randint(1, TINY_VOCAB, (batch, pos), generator=torch.Generator().manual_seed(seed))


class EncoderDecoderExamples(Examples):
    """Examples of an encoder-decoder: the encoder reads 8 tokens, the decoder 5 (different lengths, so a
    query/key mix-up cannot pass); references per stack from HF's ``encoder_*``/``decoder_*`` outputs."""

    #: Encoder and decoder positions of the example input.
    positions = (8, 5)

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        encoder, decoder = cls.positions
        inputs = {
            "input_ids": random_tokens(batch, encoder, seed),
            "decoder_input_ids": random_tokens(batch, decoder, seed + 1),
        }
        return ExampleInput(inputs, {"encoder": (batch, encoder), "decoder": (batch, decoder)})

    @classmethod
    def reference_part(
        cls, adapter: Adapter, prefix: str, n_layers: int, reference: nn.Module, inputs: Any, output: Any
    ) -> tuple[Any, tuple[str, ...]]:
        """Each stack's hidden states and self-attention patterns; the decoder's cross-attention patterns too."""
        part = SimpleNamespace(
            hidden_states=getattr(output, f"{prefix}_hidden_states"),
            attentions=getattr(output, f"{prefix}_attentions"),
            cross_attentions=output.cross_attentions if prefix == "decoder" else None,
        )
        return part, type(adapter).hidden_state_hooks(n_layers)


class T5Examples(EncoderDecoderExamples):
    adapter = T5Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> T5Config:
        """A tiny Flan-T5-like model (gated GELU MLP), 2 encoder and 3 decoder layers, ``d_kv`` ≠ ``d_model /
        n_heads``; relative positions in 8 buckets up to distance 16 (so both bucket kinds are used)."""
        architecture = architecture or cls.adapter.architectures[0]
        config_class = MT5Config if architecture.startswith("MT5") else T5Config
        values = dict(
            vocab_size=TINY_VOCAB,
            d_model=32,
            d_kv=6,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=3,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            feed_forward_proj="gated-gelu",
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
            tie_word_embeddings=not architecture.startswith("MT5"),
            architectures=[architecture],
        )
        return config_class(**{**values, **overrides})

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """The original T5's layout: ReLU MLP without a gate, embeddings tied to the LM head."""
        return {"t5-relu": cls.example_config(feed_forward_proj="relu")}


class T5GemmaExamples(EncoderDecoderExamples):
    adapter = T5GemmaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> T5GemmaConfig:
        """A tiny T5Gemma whose stacks differ: the encoder 2 layers of width 32 with 4 heads over 2 key-value heads,
        the decoder 3 layers of width 24 with 3 heads over 1; ``d_head`` 8, a sliding window of 4 on even layers
        (shorter than the inputs, so it matters), both soft-caps small enough to bend the scores and logits.
        ``overrides`` go to both stacks (``decoder_…``: to the decoder's only)."""
        common = dict(
            vocab_size=TINY_VOCAB,
            head_dim=8,
            max_position_embeddings=64,
            query_pre_attn_scalar=8,
            sliding_window=4,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        )
        shared = {k: v for k, v in overrides.items() if not k.startswith("decoder_")}
        decoder_only = {k.removeprefix("decoder_"): v for k, v in overrides.items() if k.startswith("decoder_")}
        encoder = dict(
            common,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            **shared,
        )
        decoder = (
            dict(
                common,
                hidden_size=24,
                intermediate_size=48,
                num_hidden_layers=3,
                num_attention_heads=3,
                num_key_value_heads=1,
                **shared,
            )
            | decoder_only
        )
        return T5GemmaConfig(
            encoder=encoder,
            decoder=decoder,
            vocab_size=TINY_VOCAB,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


#: The sizes BART's and Whisper's tiny configs share: 2 encoder and 3 decoder layers, 4 and 2 heads, MLPs of 64 and 48.
TWO_STACKS: dict[str, Any] = dict(
    vocab_size=TINY_VOCAB,
    d_model=32,
    encoder_layers=2,
    decoder_layers=3,
    encoder_attention_heads=4,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=48,
)


class BartExamples(EncoderDecoderExamples):
    adapter = BartAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> BartConfig:
        """A tiny BART: 2 encoder and 3 decoder layers, 4 and 2 heads, MLPs of 64 and 48."""
        values = dict(
            **TWO_STACKS,
            max_position_embeddings=40,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=None,
            architectures=[architecture or cls.adapter.architectures[0]],
        )
        return BartConfig(**{**values, **overrides})


class WhisperExamples(EncoderDecoderExamples):
    """Random log-mel features ``[b, 8 mels, 24]`` (12 frames after the strided convolution) and 5 decoder tokens."""

    adapter = WhisperAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> WhisperConfig:
        """A tiny Whisper: 8 mel bins, 12 encoder frames, 2 encoder and 3 decoder layers, 4 and 2 heads."""
        values = dict(
            **TWO_STACKS,
            num_mel_bins=8,
            max_source_positions=12,
            max_target_positions=40,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=3,
            begin_suppress_tokens=None,
            suppress_tokens=None,
            architectures=[architecture or cls.adapter.architectures[0]],
        )
        return WhisperConfig(**{**values, **overrides})

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        frames, decoder = hf_config.max_source_positions, cls.positions[1]
        generator = torch.Generator().manual_seed(seed)
        inputs = {
            "input_features": torch.randn(batch, hf_config.num_mel_bins, 2 * frames, generator=generator),
            "decoder_input_ids": random_tokens(batch, decoder, seed + 1),
        }
        return ExampleInput(inputs, {"encoder": (batch, frames), "decoder": (batch, decoder)})


#: A tiny speech encoder: two convolutions (400 samples → 79 → 39 frames), a positional convolution of width 16.
TINY_SPEECH = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=(16, 16),
    conv_kernel=(10, 3),
    conv_stride=(5, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    vocab_size=TINY_VOCAB,
)


class SpeechExamples(Examples):
    """Random audio: 400 samples per example (39 frames)."""

    samples = 400

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        audio = torch.randn(batch, cls.samples, generator=torch.Generator().manual_seed(seed))
        return ExampleInput({"input_values": audio}, {"": (batch, frames(hf_config, cls.samples))})


class HubertExamples(SpeechExamples):
    adapter = HubertAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> HubertConfig:
        return HubertConfig(**TINY_SPEECH, architectures=[architecture or cls.adapter.architectures[0]])


class Wav2Vec2Examples(SpeechExamples):
    adapter = Wav2Vec2Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Wav2Vec2Config:
        return Wav2Vec2Config(**TINY_SPEECH, architectures=[architecture or cls.adapter.architectures[0]])


#: The examples of every adapter the family registers.
EXAMPLES: tuple[type[Examples], ...] = (
    BertExamples,
    RobertaExamples,
    XLMRobertaExamples,
    DistilBertExamples,
    ModernBertExamples,
    T5Examples,
    T5GemmaExamples,
    BartExamples,
    HubertExamples,
    Wav2Vec2Examples,
    WhisperExamples,
)

__all__ = ["EXAMPLES"]
