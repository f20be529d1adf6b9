"""Adapters of the ALiBi family. Data only: config normalization and component maps."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn
from transformers import BloomConfig, FalconConfig, MptConfig

from bridge import Adapter, BlockSpec, BridgeError, ComponentMap, Spec
from bridge.components import MLP, Norm
from bridge_alibi.attention import BloomAttention, FalconAttention, MptAttention
from bridge_alibi.blocks import (
    BloomBlock,
    FalconParallelBlock,
    FalconSequentialBlock,
    FalconSharedNormBlock,
    MptBlock,
)

TINY_VOCAB = 128  # the vocabulary size of bridge.testing's tiny tokenizer


class FalconEagerAlibiWarning(UserWarning):
    """A Falcon-ALiBi model loaded with eager attention: HF's eager forward adds the bias twice."""


class BloomAdapter(Adapter):
    """BLOOM: embedding LayerNorm, per-head interleaved ``query_key_value``, ALiBi, residual passed in.

    ``hook_embed`` is the output of the embedding LayerNorm (``word_embeddings_layernorm``), i.e.
    what enters block 0; the raw token embedding has no hook point.
    """

    architectures = ("BloomForCausalLM",)
    model_types = ("bloom",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        if c.apply_residual_connection_post_layernorm:
            raise BridgeError(
                "BLOOM with apply_residual_connection_post_layernorm=True has no residual stream in the "
                "TransformerLens sense (the residual is the layer norm's output); bridge-alibi does not support it."
            )
        if c.pretraining_tp > 1 and c.slow_but_exact:
            raise BridgeError(
                "BLOOM with slow_but_exact=True bypasses the output projections' modules; load it with "
                "slow_but_exact=False (the same function up to rounding)."
            )
        return {
            "d_mlp": 4 * c.hidden_size,
            "act_fn": "gelu_new",  # BLOOM's tanh approximation
            "n_ctx": None,
            "positional_embedding_type": "alibi",
            "extra": {"embedding_layernorm": True},
        }

    def component_map(self, cfg) -> ComponentMap:
        return ComponentMap(
            embed="word_embeddings_layernorm",
            blocks="h",
            block=BlockSpec(
                BloomBlock,
                {
                    "ln1": Spec(Norm, "input_layernorm"),
                    "attn": Spec(BloomAttention, "self_attention"),
                    "ln2": Spec(Norm, "post_attention_layernorm"),
                    "mlp": Spec(MLP, "mlp", {"pre": "dense_h_to_4h", "out": "dense_4h_to_h"}),
                },
            ),
            ln_final=Spec(Norm, "ln_f"),
        )

    @classmethod
    def example_config(cls, architecture: str | None = None) -> BloomConfig:
        return BloomConfig(
            n_layer=2,
            hidden_size=48,
            n_head=6,  # not a power of two: exercises ALiBi's interleaved extra slopes
            vocab_size=TINY_VOCAB,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            architectures=[architecture or cls.architectures[0]],
        )


class MptAdapter(Adapter):
    """MPT: fused ``Wqkv`` (``[q | k | v]``), optional ``clip_qkv``, ALiBi as a ``[h, 1, max_seq_len]``
    position bias, bias-free layer norms."""

    architectures = ("MptForCausalLM",)
    model_types = ("mpt",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            "d_mlp": 4 * c.d_model,  # HF's MptMLP is 4·d_model whatever expansion_ratio says
            "act_fn": "gelu",
            "n_ctx": c.max_seq_len,
            "positional_embedding_type": "alibi",
            "extra": {
                "clip_qkv": c.attn_config.clip_qkv,
                "softmax_scale": c.attn_config.softmax_scale,
                "n_ctx_is_limit": True,  # the ALiBi bias is a fixed [h, 1, max_seq_len] table
            },
        }

    def component_map(self, cfg) -> ComponentMap:
        return ComponentMap(
            embed="wte",
            blocks="blocks",
            block=BlockSpec(
                MptBlock,
                {
                    "ln1": Spec(Norm, "norm_1"),
                    "attn": Spec(MptAttention, "attn"),
                    "ln2": Spec(Norm, "norm_2"),
                    "mlp": Spec(MLP, "ffn", {"pre": "up_proj", "out": "down_proj"}),
                },
                extra_paths={"attn_dropout": "resid_attn_dropout"},
            ),
            ln_final=Spec(Norm, "norm_f"),
        )

    @classmethod
    def example_config(cls, architecture: str | None = None) -> MptConfig:
        return MptConfig(
            n_layers=2,
            d_model=32,
            n_heads=4,
            max_seq_len=64,
            vocab_size=TINY_VOCAB,
            attn_config={"clip_qkv": 0.08},  # small enough to clip some of the tiny model's q, k, v
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            architectures=[architecture or cls.architectures[0]],
        )


class FalconAdapter(Adapter):
    """Falcon: ALiBi (Falcon-RW) or rotary; multi-head, multi-query or grouped ("new decoder
    architecture") fused ``query_key_value``; sequential or parallel attention and MLP.

    ALiBi follows HF's SDPA path (the default, and the original model): the bias is added once.
    """

    architectures = ("FalconForCausalLM",)
    model_types = ("falcon",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        n_kv = c.num_kv_heads if c.new_decoder_architecture else 1 if c.multi_query else c.num_attention_heads
        return {
            "n_key_value_heads": n_kv,
            "d_mlp": c.ffn_hidden_size,
            "act_fn": c.activation,
            "n_ctx": c.max_position_embeddings,
            "positional_embedding_type": "alibi" if c.alibi else "rotary",
            "rotary_dim": None if c.alibi else c.head_dim,
            "parallel_attn_mlp": bool(c.parallel_attn or c.new_decoder_architecture),
        }

    def component_map(self, cfg) -> ComponentMap:
        c = self.hf_config
        if c.alibi and getattr(c, "_attn_implementation", None) == "eager":
            warnings.warn(
                "This Falcon-ALiBi model was loaded with attn_implementation='eager', whose forward adds the "
                "ALiBi bias twice (HF's SDPA path and the original model add it once). bridge's hooked path "
                "adds it once, so hooked and unhooked runs will differ; load with attn_implementation='sdpa'.",
                FalconEagerAlibiWarning,
                stacklevel=2,
            )
        attn = Spec(FalconAttention, "self_attention")
        mlp = Spec(MLP, "mlp", {"pre": "dense_h_to_4h", "out": "dense_4h_to_h"})
        if not cfg.parallel_attn_mlp:
            block = BlockSpec(
                FalconSequentialBlock,
                {
                    "ln1": Spec(Norm, "input_layernorm"),
                    "attn": attn,
                    "ln2": Spec(Norm, "post_attention_layernorm"),
                    "mlp": mlp,
                },
            )
        elif c.new_decoder_architecture and c.num_ln_in_parallel_attn in (None, 2):
            block = BlockSpec(
                FalconParallelBlock,
                {"ln1": Spec(Norm, "ln_attn"), "attn": attn, "ln2": Spec(Norm, "ln_mlp"), "mlp": mlp},
            )
        else:
            block = BlockSpec(FalconSharedNormBlock, {"ln1": Spec(Norm, "input_layernorm"), "attn": attn, "mlp": mlp})
        return ComponentMap(embed="word_embeddings", blocks="h", block=block, ln_final=Spec(Norm, "ln_f"))

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
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            architectures=[architecture or cls.architectures[0]],
        )
        values.update(overrides)
        return FalconConfig(**values)


def _drop_second_alibi(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    kwargs["alibi"] = torch.zeros_like(kwargs["alibi"])
    return args, kwargs


ADAPTERS = (BloomAdapter, MptAdapter, FalconAdapter)
