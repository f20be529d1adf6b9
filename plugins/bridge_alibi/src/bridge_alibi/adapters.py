"""Adapters of the ALiBi family. Data only: config normalization and component maps."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

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


def _drop_second_alibi(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    kwargs["alibi"] = torch.zeros_like(kwargs["alibi"])
    return args, kwargs


ADAPTERS = (BloomAdapter, MptAdapter, FalconAdapter)
