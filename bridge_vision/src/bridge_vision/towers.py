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
from bridge_vision.components import LayerScaleBlock, ModuleOutput, PatchEmbedding, PositionEmbedding

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


def vision_config(hf_vision_config: Any, cls_position: bool, **overrides: Any) -> BridgeConfig:
    """A vision tower's config: ``n_ctx`` is its number of positions (patches, plus CLS where there is one, plus
    DINOv2's register tokens)."""
    patches = getattr(hf_vision_config, "num_patches", None)
    if patches is None:
        patches = (hf_vision_config.image_size // hf_vision_config.patch_size) ** 2
    registers = getattr(hf_vision_config, "num_register_tokens", 0) or 0
    return config_from_hf(
        hf_vision_config,
        d_vocab=0,
        n_ctx=patches + int(cls_position) + registers,
        positional_embedding_type="standard",
        **overrides,
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
                PositionEmbedding,
                "embeddings",
                {"source": "resized"} if resized_positions else {"source": "table", "checks_size": False},
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


#: ViT's encoder layers: pre-norm, ``dropout`` after each sublayer.
VIT_BLOCK = BlockSpec(
    SequentialBlock,
    {
        "ln1": Spec(Norm, "layernorm_before"),
        "attn": Spec(Attention, "attention", {"qkv": SplitQKV(), "out": "o_proj"}),
        "ln2": Spec(Norm, "layernorm_after"),
        "mlp": Spec(MLP, "mlp", {"pre": "fc1", "out": "fc2"}),
    },
    extra_paths={"attn_dropout": "dropout", "mlp_dropout": "dropout"},
)


def vit_tower(root: str, pooler: bool) -> ComponentMap:
    """ViT's tower (``ViTModel``): patch convolution + CLS, positions (``interpolate_pos_encoding`` resizes them),
    blocks, ``ln_post`` on every position; ``hook_pooled`` is the pooler's output (``tanh`` of a dense layer on
    ``ln_post``'s CLS position, HF's ``pooler_output``) where the model has one."""
    prefix = f"{root}." if root else ""
    return ComponentMap(
        root=root,
        blocks="layers",
        block=VIT_BLOCK,
        hooks={
            "hook_patch_embed": Spec(PatchEmbedding, "embeddings.patch_embeddings.projection"),
            "hook_pos_embed": Spec(PositionEmbedding, "embeddings", {"source": "parameter"}),
        },
        extra={"ln_post": Spec(Norm, "layernorm")},
        head_hooks={"hook_pooled": Spec(ModuleOutput, f"{prefix}pooler")} if pooler else {},
    )


def dinov2_block(hf_vision_config: Any) -> BlockSpec:
    """DINOv2's layers: pre-norm with a layer scale on each sublayer's output; the MLP is SwiGLU (gate, up, down)
    with ``use_swiglu_ffn`` (the giant checkpoints), else ``fc1``/``fc2``."""
    if getattr(hf_vision_config, "use_swiglu_ffn", False):
        mlp = Spec(MLP, "mlp", {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"})
    else:
        mlp = Spec(MLP, "mlp", {"pre": "fc1", "out": "fc2"})
    return BlockSpec(
        LayerScaleBlock,
        {
            "ln1": Spec(Norm, "norm1"),
            "attn": Spec(Attention, "attention", {"qkv": SplitQKV(), "out": "o_proj"}),
            "ln2": Spec(Norm, "norm2"),
            "mlp": mlp,
        },
        extra_paths={"attn_scale": "layer_scale1", "mlp_scale": "layer_scale2", "drop_path": "drop_path"},
    )


def dinov2_tower(root: str, hf_vision_config: Any) -> ComponentMap:
    """DINOv2's tower (``Dinov2Model``, ``Dinov2WithRegistersModel``): patch convolution + CLS (+ register tokens),
    positions resized to the image's patch grid, blocks, ``ln_post`` on every position. HF's ``pooler_output``
    is row 0 (CLS) of ``ln_post``'s output, not a tensor of its own, so it has no hook."""
    registers = bool(getattr(hf_vision_config, "num_register_tokens", 0))
    return ComponentMap(
        root=root,
        blocks="encoder.layer",
        block=dinov2_block(hf_vision_config),
        hooks={
            "hook_patch_embed": Spec(PatchEmbedding, "embeddings.patch_embeddings.projection"),
            "hook_pos_embed": Spec(
                PositionEmbedding, "embeddings", {"source": "registers" if registers else "parameter"}
            ),
        },
        extra={"ln_post": Spec(Norm, "layernorm")},
    )


def dinov2_mlp_width(hf_vision_config: Any) -> int:
    """DINOv2's MLP width: ``hidden_size · mlp_ratio``, SwiGLU's rounded down to two thirds, a multiple of 8."""
    width = int(hf_vision_config.hidden_size * hf_vision_config.mlp_ratio)
    if getattr(hf_vision_config, "use_swiglu_ffn", False):
        width = (int(width * 2 / 3) + 7) // 8 * 8
    return width
