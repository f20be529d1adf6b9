"""Adapters of the split-q/k/v layouts with learned or sinusoidal positions: GPT-Neo, OPT, XGLM. Data only:
config normalization and component maps (their components are in ``split_qkv_components``)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn
from transformers import GPTNeoConfig, OPTConfig, XGLMConfig

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, Norm, SplitQKV
from bridge.config import BridgeConfig
from bridge_gpt2.split_qkv_components import (
    GPTNeoAttention,
    GPTNeoBlock,
    OPTPostNormBlock,
    OPTPreNormBlock,
    XGLMAttention,
    XGLMBlock,
)

TINY_VOCAB = 128  # the vocabulary size of bridge.testing's tiny tokenizer


class GPTNeoAdapter(Adapter):
    """GPT-Neo: learned positions, pre-LN, split q/k/v without bias, no score scaling, layers alternating
    global and local (windowed causal) attention."""

    architectures = ("GPTNeoForCausalLM", "GPTNeoModel")
    model_types = ("gpt_neo",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            "n_heads": c.num_heads,
            "n_key_value_heads": c.num_heads,
            "d_head": c.hidden_size // c.num_heads,
            "d_mlp": c.intermediate_size or 4 * c.hidden_size,
            "act_fn": c.activation_function,
            "extra": {"attn_types": list(c.attention_layers), "window_size": c.window_size, "attn_scale": 1.0},
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return ComponentMap(
            embed="wte",
            pos_embed="wpe",
            blocks="h",
            block=BlockSpec(
                GPTNeoBlock,
                {
                    "ln1": Spec(Norm, "ln_1"),
                    "attn": Spec(GPTNeoAttention, "attn"),
                    "ln2": Spec(Norm, "ln_2"),
                    "mlp": Spec(MLP, "mlp", {"pre": "c_fc", "out": "c_proj"}),
                },
            ),
            ln_final=Spec(Norm, "ln_f"),
        )

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> GPTNeoConfig:
        """Two layers, global then local with a window of 4 (shorter than the kit's sequences)."""
        values: dict[str, Any] = dict(
            num_layers=2,
            hidden_size=32,
            num_heads=4,
            attention_types=[[["global", "local"], 1]],
            window_size=4,
            max_position_embeddings=64,
            vocab_size=TINY_VOCAB,
            embed_dropout=0.0,
            attention_dropout=0.0,
            resid_dropout=0.0,
            bos_token_id=0,
            eos_token_id=0,
            architectures=[architecture or cls.architectures[0]],
        )
        values.update(overrides)
        return GPTNeoConfig(**values)

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """GPT-Neo 125M/1.3B/2.7B alternate ``global, local`` with window 256 and ``gelu_new``; here three layers
        (``attention_types`` with two entries: global, local, global) and a window of 2 (each token sees itself
        and its predecessor on local layers)."""
        return {
            "gpt-neo-window-2": cls.example_config(
                num_layers=3, attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=2
            )
        }


class OPTAdapter(Adapter):
    """OPT: learned positions read at ``position + 2``, split q/k/v with bias, ReLU MLP on the decoder layer
    itself, pre-LN (``do_layer_norm_before``) or post-LN (OPT-350m) blocks, and ``project_in``/``project_out``
    around the blocks when ``word_embed_proj_dim != hidden_size``."""

    architectures = ("OPTForCausalLM", "OPTModel")
    model_types = ("opt",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            "act_fn": c.activation_function,
            "extra": {"word_embed_proj_dim": c.word_embed_proj_dim, "do_layer_norm_before": c.do_layer_norm_before},
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        c = self.hf_config
        pre_norm = c.do_layer_norm_before
        projected = c.word_embed_proj_dim != c.hidden_size
        attention = Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "out_proj"})
        children = {
            "ln1": Spec(Norm, "self_attn_layer_norm"),
            "attn": attention,
            "ln2": Spec(Norm, "final_layer_norm"),
            "mlp": Spec(MLP, "", {"pre": "fc1", "out": "fc2"}),
        }
        final_norm = pre_norm and not getattr(c, "_remove_final_layer_norm", False)
        return ComponentMap(
            embed="decoder.project_in" if projected else "decoder.embed_tokens",
            pos_embed="decoder.embed_positions",
            blocks="decoder.layers",
            block=BlockSpec(OPTPreNormBlock if pre_norm else OPTPostNormBlock, children),
            ln_final=Spec(Norm, "decoder.final_layer_norm") if final_norm else None,
        )

    @classmethod
    def reference_model(cls, model_class: type, directory: str | os.PathLike) -> nn.Module:
        """The HF reference (eager attention). With ``project_out``, HF's last hidden state is
        ``project_out(final residual)``; the bridge's ``hidden`` and last hooks are the final residual
        ``[b, p, d_model]``, so the reference runs ``project_out`` as the first step of its LM head instead
        (same modules, same order: the logits are HF's own)."""
        reference = super().reference_model(model_class, directory)
        base = reference.base_model
        if base.decoder.project_out is not None:
            project_out = base.decoder.project_out
            base.decoder.project_out = None
            if hasattr(reference, "lm_head"):
                reference.lm_head = nn.Sequential(project_out, reference.lm_head)
        return reference

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> OPTConfig:
        """Pre-LN OPT (125m, 1.3b… layout); ``overrides`` give the other variants."""
        values: dict[str, Any] = dict(
            vocab_size=TINY_VOCAB,
            hidden_size=32,
            word_embed_proj_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=64,
            max_position_embeddings=64,
            do_layer_norm_before=True,
            dropout=0.0,
            attention_dropout=0.0,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=0,
            architectures=[architecture or cls.architectures[0]],
        )
        values.update(overrides)
        return OPTConfig(**values)

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """OPT-350m (post-LN, ``word_embed_proj_dim`` half of ``hidden_size``: ``project_in``/``project_out``,
        no final norm), its headless ``OPTModel``, and a pre-LN checkpoint fine-tuned before transformers 4.20.1
        (``_remove_final_layer_norm``)."""
        opt_350m = dict(do_layer_norm_before=False, word_embed_proj_dim=16)
        return {
            "opt-350m-style": cls.example_config(**opt_350m),
            "opt-350m-style-headless": cls.example_config("OPTModel", **opt_350m),
            "opt-no-final-norm": cls.example_config(_remove_final_layer_norm=True),
        }


class XGLMAdapter(Adapter):
    """XGLM: sinusoidal positions read at ``position + 2``, token embeddings scaled by ``√d_model``
    (``scale_embedding``), pre-LN, split q/k/v with bias, MLP on the decoder layer itself."""

    architectures = ("XGLMForCausalLM", "XGLMModel")
    model_types = ("xglm",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            "n_heads": c.attention_heads,
            "n_key_value_heads": c.attention_heads,
            "d_head": c.d_model // c.attention_heads,
            "d_mlp": c.ffn_dim,
            "act_fn": c.activation_function,
            "positional_embedding_type": "sinusoidal",
            "extra": {"embed_scale": c.d_model**0.5 if c.scale_embedding else 1.0},
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return ComponentMap(
            embed="embed_tokens",
            pos_embed="embed_positions",
            blocks="layers",
            block=BlockSpec(
                XGLMBlock,
                {
                    "ln1": Spec(Norm, "self_attn_layer_norm"),
                    "attn": Spec(XGLMAttention, "self_attn"),
                    "ln2": Spec(Norm, "final_layer_norm"),
                    "mlp": Spec(MLP, "", {"pre": "fc1", "out": "fc2"}),
                },
            ),
            ln_final=Spec(Norm, "layer_norm"),
        )

    @classmethod
    def example_config(cls, architecture: str | None = None, **overrides: Any) -> XGLMConfig:
        values: dict[str, Any] = dict(
            vocab_size=TINY_VOCAB,
            d_model=32,
            num_layers=2,
            attention_heads=4,
            ffn_dim=64,
            max_position_embeddings=64,
            scale_embedding=True,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            architectures=[architecture or cls.architectures[0]],
        )
        values.update(overrides)
        return XGLMConfig(**values)

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """An XGLM without the embedding scale (``scale_embedding=False``); the published checkpoints scale."""
        return {"xglm-unscaled": cls.example_config(scale_embedding=False)}


SPLIT_QKV_ADAPTERS = (GPTNeoAdapter, OPTAdapter, XGLMAdapter)
