"""Examples of the bridge_gpt2 adapters: tiny configs and inputs for the conformance kit and tests."""

from __future__ import annotations

import os
from typing import Any

from torch import nn
from transformers import (
    CodeGenConfig,
    GPT2Config,
    GPTBigCodeConfig,
    GPTJConfig,
    GPTNeoConfig,
    GPTNeoXConfig,
    OPTConfig,
    XGLMConfig,
)

from bridge.kernel import TINY_SPECIAL_IDS, TINY_VOCAB, Examples
from bridge_gpt2.adapters import GPT2Adapter, GPTBigCodeAdapter, GPTNeoXAdapter
from bridge_gpt2.gptj_adapters import CodeGenAdapter, GPTJAdapter
from bridge_gpt2.split_qkv_adapters import GPTNeoAdapter, OPTAdapter, XGLMAdapter


class GPT2Examples(Examples):
    adapter = GPT2Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> GPT2Config:
        return GPT2Config(
            n_layer=2,
            n_embd=32,
            n_head=4,
            n_positions=64,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


class GPTNeoXExamples(Examples):
    adapter = GPTNeoXAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> GPTNeoXConfig:
        return GPTNeoXConfig(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            vocab_size=TINY_VOCAB,
            rotary_pct=0.5,
            use_parallel_residual=True,
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


class GPTBigCodeExamples(Examples):
    adapter = GPTBigCodeAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> GPTBigCodeConfig:
        return GPTBigCodeConfig(
            n_layer=2,
            n_embd=32,
            n_head=4,
            n_positions=64,
            vocab_size=TINY_VOCAB,
            multi_query=True,
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


class GPTNeoExamples(Examples):
    adapter = GPTNeoAdapter

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
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
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


class OPTExamples(Examples):
    adapter = OPTAdapter

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
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
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


class XGLMExamples(Examples):
    adapter = XGLMAdapter

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
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )
        values.update(overrides)
        return XGLMConfig(**values)

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """An XGLM without the embedding scale (``scale_embedding=False``); the published checkpoints scale."""
        return {"xglm-unscaled": cls.example_config(scale_embedding=False)}


class GPTJExamples(Examples):
    adapter = GPTJAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> GPTJConfig:
        return GPTJConfig(
            n_layer=2,
            n_embd=32,
            n_head=4,
            n_positions=64,
            rotary_dim=4,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


class CodeGenExamples(Examples):
    adapter = CodeGenAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> CodeGenConfig:
        return CodeGenConfig(
            n_layer=2,
            n_embd=64,
            n_head=8,  # two heads in each of the 4 parts of qkv_proj
            n_positions=64,
            n_ctx=64,
            rotary_dim=4,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


#: The examples of every adapter the family registers.
EXAMPLES = (
    GPT2Examples,
    GPTNeoXExamples,
    GPTBigCodeExamples,
    GPTNeoExamples,
    OPTExamples,
    XGLMExamples,
    GPTJExamples,
    CodeGenExamples,
)
