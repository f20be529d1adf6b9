"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: a ViT with 2-D rotary positions on every image's patches at once (Qwen2.5-VL:
window attention in most blocks), a merger (``vision_projector.``) that concatenates each 2 x 2 block of patches
and projects it to one image token, and a Qwen2/Qwen3 language model with multimodal rotary positions (M-RoPE).

The image tower's hooks (``vision_encoder.``) see ``[1, n_patches_total, …]`` (``flat.py``); the language model's
are its family's (its adapter comes from the installed plugins: Qwen2's for Qwen2-VL and Qwen2.5-VL, Qwen3's for
Qwen3-VL). HF computes the M-RoPE positions from the inputs (``image_grid_thw``, ``mm_token_type_ids``), so the
bridge passes none; ``hook_rot_q``/``hook_rot_k`` of the language model are what HF's attention reads, and ``cfg``
says the rope sections (``cfg.extra["mrope_section"]``: rotary frequencies per axis, temporal, height, width).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from bridge import BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Norm
from bridge.kernel import BridgeConfig, config_from_hf
from bridge_vision.flat import FlatInput, FlatOutput, FlatTokensBlock, SegmentAttention
from bridge_vision.vlm import VisionLanguageAdapter

RMS = {"kind": "RMS"}
#: Each version's vision MLP: Qwen2-VL ``fc1``/``fc2``, Qwen2.5-VL SwiGLU, Qwen3-VL ``linear_fc1``/``linear_fc2``.
VISION_MLPS: dict[str, dict[str, str]] = {
    "qwen2_vl": {"pre": "fc1", "out": "fc2"},
    "qwen2_5_vl": {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"},
    "qwen3_vl": {"pre": "linear_fc1", "out": "linear_fc2"},
}


def qwen_vision_block(version: str) -> BlockSpec:
    norm = RMS if version == "qwen2_5_vl" else {}
    return BlockSpec(
        FlatTokensBlock,
        {
            "ln1": Spec(Norm, "norm1", norm),
            "attn": Spec(SegmentAttention, "attn"),
            "ln2": Spec(Norm, "norm2", norm),
            "mlp": Spec(MLP, "mlp", VISION_MLPS[version]),
        },
    )


def qwen_vision_tower(root: str, version: str) -> ComponentMap:
    """The Qwen-VL image tower: ``hook_patch_embed`` ``[1, n_patches_total, d_vision]`` (the 3-D patch
    convolution's output, patches in the processor's order: each image's 2 x 2 merge blocks row by row), then the
    blocks. Qwen2.5-VL's blocks see the patches reordered by window (HF's ``window_index``)."""
    return ComponentMap(
        root=root,
        blocks="blocks",
        block=qwen_vision_block(version),
        hooks={"hook_patch_embed": Spec(FlatOutput, "patch_embed")},
    )


class QwenVLAdapter(VisionLanguageAdapter):
    """Qwen2-VL, Qwen2.5-VL, Qwen3-VL (see the module docstring). Inputs go as the processor's output (one dict:
    ``input_ids``, ``pixel_values`` ``[n_patches_total, channels · temporal_patch · patch²]``, ``image_grid_thw``
    ``[n_images, 3]``, ``mm_token_type_ids``), or as text with images through the processor."""

    architectures = ("Qwen2VLForConditionalGeneration",)
    model_types = ("qwen2_vl",)
    vision_root = "model.visual"
    projector = "model.visual.merger"
    computes_positions = True
    version: ClassVar[str] = "qwen2_vl"
    language_layouts: ClassVar[Mapping[str, str]] = {"qwen2_vl_text": "qwen2"}

    def bridge_config(self) -> BridgeConfig:
        cfg = super().bridge_config()
        rope = dict(getattr(self.hf_config.text_config, "rope_parameters", None) or {})
        cfg.extra["mrope_section"] = list(rope.get("mrope_section", self.default_mrope_section))
        cfg.extra["mrope_axes"] = ("temporal", "height", "width")
        cfg.extra["mrope_interleaved"] = self.version == "qwen3_vl"
        return cfg

    #: The sections HF's rotary embedding uses when the config names none.
    default_mrope_section: ClassVar[tuple[int, int, int]] = (16, 24, 24)

    def vision_tower(self) -> ComponentMap:
        return qwen_vision_tower(self.vision_root, self.version)

    def vision_cfg(self) -> BridgeConfig:
        vision = self.hf_config.vision_config
        width = getattr(vision, "embed_dim", None) or vision.hidden_size
        d_mlp = getattr(vision, "intermediate_size", None) or int(width * vision.mlp_ratio)
        cfg = config_from_hf(
            vision,
            d_model=width,
            n_heads=vision.num_heads,
            n_key_value_heads=vision.num_heads,
            d_head=width // vision.num_heads,
            n_layers=vision.depth,
            d_mlp=d_mlp,
            d_vocab=0,
            n_ctx=None,
            positional_embedding_type="rotary",
            rotary_dim=width // vision.num_heads,
            normalization_type="RMS" if self.version == "qwen2_5_vl" else "LN",
        )
        full = set(getattr(vision, "fullatt_block_indexes", None) or range(vision.depth))
        cfg.extra["layer_types"] = ["full_attention" if i in full else "window_attention" for i in range(vision.depth)]
        cfg.extra["spatial_merge_size"] = vision.spatial_merge_size
        return cfg

    def projector_hooks(self) -> dict[str, Spec]:
        """``hook_in`` ``[1, n_patches_total, d_vision]``: the merger's input (the last block's output; Qwen2.5-VL:
        in window order); ``hook_out`` ``[1, n_image_tokens_total, d_model]``: the image tokens in the order the
        language model receives them (HF's ``pooler_output``; Qwen2.5-VL: after undoing the window order)."""
        return {
            "vision_projector.hook_in": Spec(FlatInput, self.projector),
            "vision_projector.hook_out": Spec(FlatOutput, self.vision_root, {"field": "pooler_output"}),
        }

    @classmethod
    def image_tokens(cls, hf_config: Any) -> int:
        raise NotImplementedError(f"{cls.__name__}: the image tokens of an image depend on its grid (image_grid_thw)")

    def image_token_counts(self, inputs: Mapping[str, Any]) -> list[int] | None:
        grids = inputs.get("image_grid_thw")
        if grids is None:
            return None
        merge = self.hf_config.vision_config.spatial_merge_size
        return (grids.prod(-1) // merge**2).tolist()


class Qwen2_5_VLAdapter(QwenVLAdapter):
    """Qwen2.5-VL: Qwen2-VL with RMS norms and a SwiGLU MLP in the image tower, window attention in the blocks
    outside ``fullatt_block_indexes`` (``vision_encoder.cfg.extra["layer_types"]``), the patches reordered by
    window before the blocks (their hooks see that order) and the image tokens put back after the merger."""

    architectures = ("Qwen2_5_VLForConditionalGeneration",)
    model_types = ("qwen2_5_vl",)
    version = "qwen2_5_vl"
    language_layouts: ClassVar[Mapping[str, str]] = {"qwen2_5_vl_text": "qwen2"}


class Qwen3VLAdapter(QwenVLAdapter):
    """Qwen3-VL: a learned position table in the image tower (interpolated to each image's grid and added to the
    patches inline, so only the sum is seen, at ``blocks.0.hook_resid_pre``), interleaved M-RoPE, a Qwen3 language
    model, and DeepStack: the mergers ``vision_projector.deepstack.{j}.hook_out`` ``[1, n_image_tokens_total,
    d_model]`` read image-tower block ``deepstack_visual_indexes[j]`` and their output is added to the residual
    stream at the image positions after language-model block ``j``: there ``blocks.{j+1}.hook_resid_pre`` is
    ``blocks.{j}.hook_resid_post`` plus it."""

    architectures = ("Qwen3VLForConditionalGeneration",)
    model_types = ("qwen3_vl",)
    version = "qwen3_vl"
    language_layouts: ClassVar[Mapping[str, str]] = {"qwen3_vl_text": "qwen3"}
    default_mrope_section = (24, 20, 20)

    def bridge_config(self) -> BridgeConfig:
        cfg = super().bridge_config()
        cfg.extra["deepstack_layers"] = list(range(len(self.hf_config.vision_config.deepstack_visual_indexes)))
        return cfg

    def projector_hooks(self) -> dict[str, Spec]:
        hooks = super().projector_hooks()
        for j in range(len(self.hf_config.vision_config.deepstack_visual_indexes)):
            hooks[f"vision_projector.deepstack.{j}.hook_out"] = Spec(
                FlatOutput, f"{self.vision_root}.deepstack_merger_list.{j}"
            )
        return hooks


QWEN_VL_ADAPTERS = (QwenVLAdapter, Qwen2_5_VLAdapter, Qwen3VLAdapter)
