"""Adapters of the split-q/k/v layouts with learned or sinusoidal positions: GPT-Neo, OPT, XGLM. Data only:
config normalization and component maps (their components are in ``split_qkv_components``)."""

from __future__ import annotations

from typing import Any

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, Norm, SplitQKV
from bridge.kernel import BridgeConfig
from bridge_gpt2.split_qkv_components import (
    GPTNeoAttention,
    GPTNeoBlock,
    OPTPostNormBlock,
    OPTPreNormBlock,
    XGLMAttention,
    XGLMBlock,
)


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
