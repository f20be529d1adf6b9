"""Adapters of GPT-J's layout: GPT-J and CodeGen. Data only; the attention is in ``gptj_attention``.

Both: one ``ln_1`` read by attention and MLP in parallel, inline attention with rotary on adjacent pairs of
the first ``rotary_dim`` dimensions of each head (a fixed sinusoid table of ``n_positions`` rows), GELU MLP.
"""

from __future__ import annotations

from typing import Any

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Norm
from bridge_gpt2.gptj_attention import CodeGenAttention, GPTJAttention, GPTJBlock


def _gptj_style_overrides(hf_config: Any) -> dict[str, Any]:
    """The ``BridgeConfig`` fields GPT-J and CodeGen name their own way."""
    d_head = hf_config.n_embd // hf_config.n_head
    return {
        "normalization_type": "LN",
        "parallel_attn_mlp": True,
        "positional_embedding_type": "rotary",
        "rotary_dim": hf_config.rotary_dim or d_head,
        "d_mlp": hf_config.n_inner or 4 * hf_config.n_embd,
        "act_fn": hf_config.activation_function,
        "rotary_adjacent_pairs": True,  # rotary on adjacent pairs (rotate-every-two)
        # positions index a table of n_ctx rows
        "extra": {"rope_theta": 10000.0, "n_ctx_is_limit": True},
    }


def _gptj_style_map(attention: type[GPTJAttention] | type[CodeGenAttention]) -> ComponentMap:
    """GPT-J and CodeGen share module names: wte, h[i].{ln_1, attn, mlp.{fc_in, fc_out}}, ln_f."""
    children = {
        "ln1": Spec(Norm, "ln_1"),
        "attn": Spec(attention, "attn"),
        "mlp": Spec(MLP, "mlp", {"pre": "fc_in", "out": "fc_out"}),
    }
    return ComponentMap(embed="wte", blocks="h", block=BlockSpec(GPTJBlock, children), ln_final=Spec(Norm, "ln_f"))


class GPTJAdapter(Adapter):
    """GPT-J: separate q/k/v projections, fp32 scores divided by √d_head, parallel block on one shared norm."""

    architectures = ("GPTJForCausalLM", "GPTJModel")
    model_types = ("gptj",)

    def config_overrides(self) -> dict[str, Any]:
        return _gptj_style_overrides(self.hf_config)

    def component_map(self, cfg) -> ComponentMap:
        return _gptj_style_map(GPTJAttention)


class CodeGenAdapter(Adapter):
    """CodeGen: GPT-J's block with one fused ``qkv_proj`` in 4 parts of ``[q | v | k]``; scores masked, then
    divided by √d_head."""

    architectures = ("CodeGenForCausalLM", "CodeGenModel")
    model_types = ("codegen",)

    def config_overrides(self) -> dict[str, Any]:
        return _gptj_style_overrides(self.hf_config)

    def component_map(self, cfg) -> ComponentMap:
        return _gptj_style_map(CodeGenAttention)
