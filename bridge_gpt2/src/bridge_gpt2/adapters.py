"""Adapters of the fused-QKV family. Data only: config normalization and component maps."""

from __future__ import annotations

from typing import Any

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, FusedQKV, Norm, ParallelBlock, SequentialBlock
from bridge_gpt2.gptj_adapters import CodeGenAdapter, GPTJAdapter
from bridge_gpt2.split_qkv_adapters import GPTNeoAdapter, OPTAdapter, XGLMAdapter


def _gpt2_style_map(qkv: FusedQKV) -> ComponentMap:
    """GPT-2 and GPT-BigCode share module names: wte/wpe, h[i].{ln_1, attn, ln_2, mlp}, ln_f."""
    return ComponentMap(
        embed="wte",
        pos_embed="wpe",
        blocks="h",
        block=BlockSpec(
            SequentialBlock,
            {
                "ln1": Spec(Norm, "ln_1"),
                "attn": Spec(Attention, "attn", {"qkv": qkv, "out": "c_proj"}),
                "ln2": Spec(Norm, "ln_2"),
                "mlp": Spec(MLP, "mlp", {"pre": "c_fc", "out": "c_proj"}),
            },
        ),
        ln_final=Spec(Norm, "ln_f"),
    )


class GPT2Adapter(Adapter):
    """GPT-2: learned positions, pre-LN, fused ``c_attn`` (``[q | k | v]``), GELU MLP."""

    architectures = ("GPT2LMHeadModel", "GPT2Model")
    model_types = ("gpt2",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {"d_mlp": c.n_inner or 4 * c.n_embd, "act_fn": c.activation_function}

    def component_map(self, cfg) -> ComponentMap:
        return _gpt2_style_map(FusedQKV("c_attn", layout="grouped"))


class GPTNeoXAdapter(Adapter):
    """GPT-NeoX / Pythia: partial rotary, per-head interleaved ``query_key_value``, parallel residual."""

    architectures = ("GPTNeoXForCausalLM", "GPTNeoXModel")
    model_types = ("gpt_neox",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        d_head = c.hidden_size // c.num_attention_heads
        factor = (c.rope_parameters or {}).get("partial_rotary_factor", 1.0)
        return {
            "positional_embedding_type": "rotary",
            "rotary_dim": int(d_head * factor),
            "parallel_attn_mlp": bool(c.use_parallel_residual),
            "extra": {"rope_theta": (c.rope_parameters or {}).get("rope_theta")},
        }

    def component_map(self, cfg) -> ComponentMap:
        wiring = ParallelBlock if cfg.parallel_attn_mlp else SequentialBlock
        return ComponentMap(
            embed="embed_in",
            blocks="layers",
            block=BlockSpec(
                wiring,
                {
                    "ln1": Spec(Norm, "input_layernorm"),
                    "attn": Spec(
                        Attention,
                        "attention",
                        {
                            "qkv": FusedQKV("query_key_value", layout="per_head"),
                            "out": "dense",
                            "rotary": True,
                        },
                    ),
                    "ln2": Spec(Norm, "post_attention_layernorm"),
                    "mlp": Spec(MLP, "mlp", {"pre": "dense_h_to_4h", "out": "dense_4h_to_h"}),
                },
                extra_paths={"attn_dropout": "post_attention_dropout", "mlp_dropout": "post_mlp_dropout"},
            ),
            ln_final=Spec(Norm, "final_layer_norm"),
        )


class GPTBigCodeAdapter(Adapter):
    """GPT-BigCode (SantaCoder, StarCoder): GPT-2 layout with multi-query attention (one kv head)."""

    architectures = ("GPTBigCodeForCausalLM", "GPTBigCodeModel")
    model_types = ("gpt_bigcode",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            "n_key_value_heads": 1 if c.multi_query else c.n_head,
            "d_mlp": c.n_inner or 4 * c.n_embd,
            "act_fn": c.activation_function,
        }

    def component_map(self, cfg) -> ComponentMap:
        layout = "grouped" if self.hf_config.multi_query else "per_head"
        return _gpt2_style_map(FusedQKV("c_attn", layout=layout))


ADAPTERS = (
    GPT2Adapter,
    GPTNeoXAdapter,
    GPTBigCodeAdapter,
    GPTNeoAdapter,
    OPTAdapter,
    XGLMAdapter,
    GPTJAdapter,
    CodeGenAdapter,
)
