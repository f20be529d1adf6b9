"""ModernBERT (``ModernBertModel``, ``ModernBertForMaskedLM``, ``ModernBertForSequenceClassification``): a
pre-norm encoder with rotary positions, a fused q/k/v projection, a fused gated MLP and global attention every
``global_attn_every_n_layers`` layers, sliding-window (local) attention in the others."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from bridge import BlockSpec, ComponentMap, Spec
from bridge.components import Attention, Block, FusedQKV, Norm, SequentialBlock
from bridge.kernel import BridgeConfig
from bridge_encoders.components import FusedGatedMLP, ModuleInput
from bridge_encoders.encoders import EncoderAdapter, with_head


@dataclasses.dataclass(frozen=True)
class ModernBertBlockSpec(BlockSpec):
    """ModernBERT's layers, where layer 0 has no attention norm (HF's ``attn_norm`` is an ``nn.Identity``):
    that layer's block has no ``ln1``."""

    def build(self, hf_block: nn.Module, cfg: BridgeConfig) -> Block:
        children = dict(self.children)
        if isinstance(hf_block.get_submodule(children["ln1"].path), nn.Identity):
            del children["ln1"]
        return BlockSpec(self.kind, children, self.extra_paths).build(hf_block, cfg)


MODERNBERT_BLOCK = ModernBertBlockSpec(
    SequentialBlock,
    {
        "ln1": Spec(Norm, "attn_norm"),
        "attn": Spec(Attention, "attn", {"qkv": FusedQKV("Wqkv"), "out": "Wo", "rotary": True}),
        "ln2": Spec(Norm, "mlp_norm"),
        "mlp": Spec(FusedGatedMLP, "mlp", {"fused": "Wi", "out": "Wo"}),
    },
)


class ModernBertAdapter(EncoderAdapter):
    """ModernBERT: ``hook_embed``, ``ln_embed`` (the embeddings' norm), pre-norm blocks (block 0 has no ``ln1``),
    ``attn.hook_rot_q``/``hook_rot_k``, ``ln_final``; ``*ForMaskedLM``: ``mlm_head`` (``head``: dense → act → norm)
    and ``decoder`` as ``unembed``; ``*ForSequenceClassification``: ``hook_pooled`` (the pooled ``[b, d_model]``
    the head reads: the first position, or the mean, as the config says), ``classifier`` as ``unembed``."""

    architectures = ("ModernBertModel", "ModernBertForMaskedLM", "ModernBertForSequenceClassification")
    model_types = ("modernbert",)
    base_architecture = "ModernBertModel"
    final_norm_in_hidden_states = True
    mlm_head = ("head", {"dense": "dense", "norm": "norm"}, "decoder")

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            **super().config_overrides(),
            "positional_embedding_type": "rotary",
            "rotary_dim": c.hidden_size // c.num_attention_heads,
            "act_fn": c.hidden_activation,
            "eps": c.norm_eps,
            "gated_mlp": True,
        }

    def classifier(self, p: str) -> tuple[dict[str, Spec], str]:
        return {"hook_pooled": Spec(ModuleInput, "head")}, "classifier"

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        p = self.prefix()
        cmap = ComponentMap(
            root="",
            embed=f"{p}embeddings.tok_embeddings",
            blocks=f"{p}layers",
            block=MODERNBERT_BLOCK,
            ln_final=Spec(Norm, f"{p}final_norm"),
            extra={"ln_embed": Spec(Norm, f"{p}embeddings.norm")},
        )
        return with_head(cmap, self.model_class().__name__, self)


__all__ = ["ModernBertAdapter", "ModernBertBlockSpec"]
