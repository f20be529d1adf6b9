"""Component maps of the CLIP and SigLIP towers, each relative to its tower module.

A tower map is self-contained: its paths start at the module that holds the tower (``root``), so a
model that embeds the tower elsewhere (a two-tower model, a vision-language model) reuses it by
giving another ``root``.
"""

from __future__ import annotations

from typing import Any

from bridge import BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, Norm, SequentialBlock, SplitQKV
from bridge.kernel import BridgeConfig, config_from_hf
from bridge_vision.components import ModuleOutput, PatchEmbedding, PositionEmbedding

#: CLIP and SigLIP encoder layers share one layout: pre-norm attention and MLP with these module names.
ENCODER_BLOCK = BlockSpec(
    SequentialBlock,
    {
        "ln1": Spec(Norm, "layer_norm1"),
        "attn": Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "out_proj"}),
        "ln2": Spec(Norm, "layer_norm2"),
        "mlp": Spec(MLP, "mlp", {"pre": "fc1", "out": "fc2"}),
    },
)


def vision_config(hf_vision_config: Any, cls_position: bool) -> BridgeConfig:
    """A vision tower's config: ``n_ctx`` is its number of positions (patches, plus CLS where there is one)."""
    patches = getattr(hf_vision_config, "num_patches", None)
    if patches is None:
        patches = (hf_vision_config.image_size // hf_vision_config.patch_size) ** 2
    return config_from_hf(
        hf_vision_config, d_vocab=0, n_ctx=patches + int(cls_position), positional_embedding_type="standard"
    )


def text_config(hf_text_config: Any) -> BridgeConfig:
    return config_from_hf(hf_text_config)


def clip_vision_tower(root: str) -> ComponentMap:
    """CLIP's vision tower (``CLIPVisionModel``): patch conv + CLS, ``ln_pre``, blocks, ``ln_post`` on the CLS
    position; ``hook_pooled`` is ``ln_post``'s output (HF's ``pooler_output``)."""
    return ComponentMap(
        root=root,
        blocks="encoder.layers",
        block=ENCODER_BLOCK,
        hooks={
            "hook_patch_embed": Spec(PatchEmbedding, "embeddings.patch_embedding"),
            "hook_pos_embed": Spec(PositionEmbedding, "embeddings"),
        },
        extra={
            "ln_pre": Spec(Norm, "pre_layrnorm"),
            "ln_post": Spec(Norm, "post_layernorm"),
        },
        head_hooks={"hook_pooled": Spec(ModuleOutput, f"{root}.post_layernorm" if root else "post_layernorm")},
    )


def siglip_vision_tower(root: str, hf_vision_config: Any, resized_positions: bool = False) -> ComponentMap:
    """SigLIP's (and SigLIP 2's) vision tower: patch embedding, blocks, ``ln_post`` on every position, and
    the attention-pooling head (``hook_pooled``, HF's ``pooler_output``) where the config has one."""
    prefix = f"{root}." if root else ""
    pooled = {"hook_pooled": Spec(ModuleOutput, f"{prefix}head")} if hf_vision_config.vision_use_head else {}
    return ComponentMap(
        root=root,
        blocks="encoder.layers",
        block=ENCODER_BLOCK,
        hooks={
            "hook_patch_embed": Spec(
                PatchEmbedding, "embeddings.patch_embedding", {"layout": "linear" if resized_positions else "conv"}
            ),
            "hook_pos_embed": Spec(
                PositionEmbedding, "embeddings", {"source": "resized" if resized_positions else "table"}
            ),
        },
        extra={"ln_post": Spec(Norm, "post_layernorm")},
        head_hooks=pooled,
    )


def text_tower(root: str) -> ComponentMap:
    """CLIP's and SigLIP's text tower: token and position embeddings, blocks, ``ln_final``."""
    return ComponentMap(
        root=root,
        embed="embeddings.token_embedding",
        pos_embed="embeddings.position_embedding",
        blocks="encoder.layers",
        block=ENCODER_BLOCK,
        ln_final=Spec(Norm, "final_layer_norm"),
    )
