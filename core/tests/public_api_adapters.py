"""Adapters written the way a third-party author would, with bridge's public API only (no name starting
with ``_`` is used here; ``test_public_block_api`` checks it): Phi (a parallel block reading one shared norm)
and GPT-J (attention computed inline by the HF module, re-expressed with ``Attention.attend_with_hooks``), each
with its ``Examples`` (the tiny config the kit builds).
OPT's pre- and post-norm blocks are in the ``bridge new-plugin`` template."""

from __future__ import annotations

from typing import Any, ClassVar

import einops
import torch
import transformers
from torch import nn
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, ForwardOverride, Norm, SharedNormParallelBlock, SplitQKV
from bridge.kernel import BridgeConfig, Examples


class PhiAdapter(Adapter):
    """Phi-1/2: ``post = pre + attn(ln(pre)) + mlp(ln(pre))`` with one ``input_layernorm``, partial rotary."""

    architectures: ClassVar[tuple[str, ...]] = ("PhiForCausalLM",)

    def config_overrides(self) -> dict[str, Any]:
        return {"normalization_type": "LN", "parallel_attn_mlp": True}

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        attention = Spec(
            Attention, "self_attn", {"qkv": SplitQKV("q_proj", "k_proj", "v_proj"), "out": "dense", "rotary": True}
        )
        children = {
            "ln1": Spec(Norm, "input_layernorm"),
            "attn": attention,
            "mlp": Spec(MLP, "mlp", {"pre": "fc1", "out": "fc2"}),
        }
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=BlockSpec(
                SharedNormParallelBlock, children, {"attn_dropout": "resid_dropout", "mlp_dropout": "resid_dropout"}
            ),
            ln_final=Spec(Norm, "final_layernorm"),
        )


class GPTJBlock(SharedNormParallelBlock):
    """GPT-J: ``ln_1`` shared by attention and MLP; the HF block returns ``(hidden, attention weights)``."""

    returns_attention_weights = True


class GPTJAttention(Attention):
    """GPT-J's attention computes scores inline (``_attn``), not through ``AttentionInterface``: while an
    attention-internal hook is active its forward is replaced by the same computation around
    ``attend_with_hooks``, which fires ``hook_rot_q/k``, ``hook_attn_scores``, ``hook_pattern`` and ``hook_z``."""

    uses_seam = False

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module, cfg, qkv=SplitQKV("q_proj", "k_proj", "v_proj"), out="out_proj", rotary=True)
        internal = tuple(getattr(self, name) for name in self.internal_hooks)
        self.attach(ForwardOverride(hf_module, self.forward_with_hooks, internal))

    def forward_with_hooks(
        self,
        original: Any,
        hidden_states: torch.Tensor,
        layer_past: Any = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.hf_module
        split = "b p (h d) -> b p h d"
        query = einops.rearrange(m.q_proj(hidden_states), split, h=self.n_heads)  # [b, p, h, d]
        key = einops.rearrange(m.k_proj(hidden_states), split, h=self.n_heads)
        value = einops.rearrange(m.v_proj(hidden_states), "b p (h d) -> b h p d", h=self.n_heads)
        sincos = m.embed_positions.to(position_ids.device)[position_ids].to(key.dtype)  # [b, p, rotary_dim]
        sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)
        rot = m.rotary_dim if m.rotary_dim is not None else self.d_head
        query = torch.cat([apply_rotary_pos_emb(query[..., :rot], sin, cos), query[..., rot:]], dim=-1)
        key = torch.cat([apply_rotary_pos_emb(key[..., :rot], sin, cos), key[..., rot:]], dim=-1)
        query, key = query.transpose(1, 2), key.transpose(1, 2)  # [b, h, p, d]
        if layer_past is not None:
            key, value = layer_past.update(key, value, m.layer_idx)
        z, pattern = self.attend_with_hooks(
            m, query, key, value, attention_mask, scaling=1.0 / float(m.scale_attn), dropout=m.attn_dropout.p
        )  # z: [b, p, h, d]
        out = m.resid_dropout(m.out_proj(einops.rearrange(z, "b p h d -> b p (h d)")))
        return out, pattern


class GPTJAdapter(Adapter):
    """GPT-J: parallel block with one shared norm, inline attention with interleaved partial rotary."""

    architectures: ClassVar[tuple[str, ...]] = ("GPTJForCausalLM",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {"normalization_type": "LN", "parallel_attn_mlp": True, "d_mlp": c.n_inner or 4 * c.n_embd}

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        children = {
            "ln1": Spec(Norm, "ln_1"),
            "attn": Spec(GPTJAttention, "attn"),
            "mlp": Spec(MLP, "mlp", {"pre": "fc_in", "out": "fc_out"}),
        }
        return ComponentMap(embed="wte", blocks="h", block=BlockSpec(GPTJBlock, children), ln_final=Spec(Norm, "ln_f"))


class PhiExamples(Examples):
    adapter = PhiAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return transformers.PhiConfig(
            architectures=["PhiForCausalLM"],
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            partial_rotary_factor=0.5,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attention_dropout=0.0,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
        )


class GPTJExamples(Examples):
    adapter = GPTJAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return transformers.GPTJConfig(
            architectures=["GPTJForCausalLM"],
            vocab_size=128,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            rotary_dim=4,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        )
