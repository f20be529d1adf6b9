"""Adapters of the vision family: CLIP, SigLIP, SigLIP 2, ViT and DINOv2 image encoders, their image classifiers,
and the two-tower CLIP and SigLIP models. Tower maps are in ``towers.py``; example inputs are random pixel values."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from bridge import Adapter, ComponentMap, Spec
from bridge.kernel import BridgeConfig, Composite, Tower
from bridge_vision.components import ModuleInput, ModuleOutput
from bridge_vision.towers import (
    clip_vision_tower,
    dinov2_mlp_width,
    dinov2_tower,
    siglip_vision_tower,
    text_config,
    text_tower,
    vision_config,
    vit_tower,
)


class VisionAdapter(Adapter):
    """Common ground of the image encoders: the vision config lives at ``vision_config`` on composite configs."""

    modalities = ("image",)
    cls_position: ClassVar[bool] = False
    #: What an image classifier's head reads: ``"mean"`` of the final tokens (CLIP, SigLIP) or ``"cls"`` (ViT).
    classifier_reads: ClassVar[str] = "mean"

    def vision_hf_config(self) -> Any:
        return getattr(self.hf_config, "vision_config", None) or self.hf_config

    def bridge_config(self) -> BridgeConfig:
        cfg = vision_config(self.vision_hf_config(), self.cls_position)
        cfg.architecture = (getattr(self.hf_config, "architectures", None) or [""])[0]
        cfg.model_type = self.hf_config.model_type
        return cfg


class CLIPVisionAdapter(VisionAdapter):
    """``CLIPVisionModel``: ``hidden`` is ``last_hidden_state`` ``[b, 1 + n_patches, d_model]`` (before ``ln_post``),
    ``pooled`` ``ln_post`` of the CLS position ``[b, d_model]``."""

    architectures = ("CLIPVisionModel",)
    model_types = ("clip_vision_model",)
    output_fields: ClassVar[dict[str, Any]] = {"hidden": "last_hidden_state", "pooled": "pooler_output"}
    cls_position = True

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return clip_vision_tower("")


class CLIPVisionProjectionAdapter(CLIPVisionAdapter):
    """``CLIPVisionModelWithProjection``: the CLIP vision tower and ``hook_image_embeds`` ``[b, projection_dim]``;
    ``hidden`` as ``CLIPVisionModel``'s, ``embeds`` HF's ``image_embeds``."""

    architectures = ("CLIPVisionModelWithProjection",)
    model_types = ()
    output_fields: ClassVar[dict[str, Any]] = {"hidden": "last_hidden_state", "embeds": "image_embeds"}

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        tower = clip_vision_tower("vision_model")
        proj = {"hook_image_embeds": Spec(ModuleOutput, "visual_projection")}
        return dataclasses.replace(tower, head_hooks={**tower.head_hooks, **proj})


class SiglipVisionAdapter(VisionAdapter):
    """``SiglipVisionModel``: ``hidden`` is ``last_hidden_state`` ``[b, n_patches, d_model]`` (after ``ln_post``),
    ``pooled`` the attention-pooling head's output ``[b, d_model]``."""

    architectures = ("SiglipVisionModel",)
    model_types = ("siglip_vision_model",)
    output_fields: ClassVar[dict[str, Any]] = {"hidden": "last_hidden_state", "pooled": "pooler_output"}

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return siglip_vision_tower("", self.vision_hf_config())


class Siglip2VisionAdapter(VisionAdapter):
    """``Siglip2VisionModel`` (NaFlex): inputs are flattened patches ``pixel_values`` ``[b, max_patches,
    channels * patch²]`` with ``spatial_shapes`` ``[b, 2]`` and ``pixel_attention_mask`` ``[b, max_patches]``
    (pass the image processor's output as a dict); positions are the ``max_patches`` patch slots."""

    architectures = ("Siglip2VisionModel",)
    model_types = ("siglip2_vision_model",)
    output_fields: ClassVar[dict[str, Any]] = {"hidden": "last_hidden_state", "pooled": "pooler_output"}

    def bridge_config(self) -> BridgeConfig:
        cfg = super().bridge_config()
        cfg.n_ctx = self.hf_config.num_patches
        return cfg

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return siglip_vision_tower("", self.vision_hf_config(), resized_positions=True)


class CLIPClassifierAdapter(VisionAdapter):
    """``CLIPForImageClassification``: the CLIP vision tower, the mean of the patch positions (``hook_pooled``,
    ``[b, d_model]``), and the classifier (``logits`` ``[b, n_labels]``; its weight is ``W_U``)."""

    architectures = ("CLIPForImageClassification",)
    output_fields: ClassVar[dict[str, Any]] = {"logits": "logits"}
    cls_position = True

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        tower = clip_vision_tower("vision_model")
        return dataclasses.replace(
            tower, head_unembed="classifier", head_hooks={"hook_pooled": Spec(ModuleInput, "classifier")}
        )


class SiglipClassifierAdapter(VisionAdapter):
    """``SiglipForImageClassification``: the SigLIP vision tower, the mean over positions (``hook_pooled``), and
    the classifier (``logits`` ``[b, n_labels]``). The tower's attention-pooling head is not used, so not hooked."""

    architectures = ("SiglipForImageClassification",)
    output_fields: ClassVar[dict[str, Any]] = {"logits": "logits"}

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        tower = siglip_vision_tower("vision_model", self.vision_hf_config())
        return dataclasses.replace(
            tower, head_unembed="classifier", head_hooks={"hook_pooled": Spec(ModuleInput, "classifier")}
        )


class ViTAdapter(VisionAdapter):
    """``ViTModel``: ``hidden`` is ``last_hidden_state`` ``[b, 1 + n_patches, d_model]`` (after ``ln_post``),
    ``pooled`` the pooler's output ``[b, d_model]``."""

    architectures = ("ViTModel",)
    model_types = ("vit",)
    output_fields: ClassVar[dict[str, Any]] = {"hidden": "last_hidden_state", "pooled": "pooler_output"}
    cls_position = True

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return vit_tower("", pooler=True)


class ViTClassifierAdapter(VisionAdapter):
    """``ViTForImageClassification``: the ViT tower, ``ln_post``'s CLS position (``hook_pooled``, ``[b, d_model]``),
    and the classifier (``logits`` ``[b, n_labels]``; its weight is ``W_U``)."""

    architectures = ("ViTForImageClassification",)
    output_fields: ClassVar[dict[str, Any]] = {"logits": "logits"}
    cls_position = True
    classifier_reads = "cls"

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        tower = vit_tower("vit", pooler=False)
        return dataclasses.replace(
            tower, head_unembed="classifier", head_hooks={"hook_pooled": Spec(ModuleInput, "classifier")}
        )


class Dinov2Adapter(VisionAdapter):
    """``Dinov2Model`` and ``Dinov2WithRegistersModel``: ``hidden`` is ``last_hidden_state`` ``[b, p, d_model]``
    (after ``ln_post``; ``p = 1 + n_registers + n_patches``: CLS, the register tokens, the patches), ``pooled`` its
    CLS row ``[b, d_model]``. ``cfg.extra["register_positions"]`` is the register tokens' ``range`` of positions."""

    architectures = ("Dinov2Model", "Dinov2WithRegistersModel")
    model_types = ("dinov2", "dinov2_with_registers")
    output_fields: ClassVar[dict[str, Any]] = {"hidden": "last_hidden_state", "pooled": "pooler_output"}
    cls_position = True

    def bridge_config(self) -> BridgeConfig:
        hf = self.vision_hf_config()
        cfg = vision_config(hf, self.cls_position, d_mlp=dinov2_mlp_width(hf))
        cfg.architecture = (getattr(self.hf_config, "architectures", None) or [""])[0]
        cfg.model_type = self.hf_config.model_type
        cfg.extra["register_positions"] = range(1, 1 + (getattr(hf, "num_register_tokens", 0) or 0))
        return cfg

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        return dinov2_tower("", self.vision_hf_config())


class TwoTowerAdapter(Adapter):
    """Two-tower image-text models: towers ``vision`` and ``text`` (hook names ``vision.blocks.0…``,
    ``text.blocks.0…``), ``logits`` is ``logits_per_image`` ``[b_images, b_texts]`` and ``embeds`` the
    normalized ``(image_embeds, text_embeds)``. The bridge's ``cfg`` is the vision tower's; each tower's
    own is ``model.vision.cfg`` / ``model.text.cfg``."""

    modalities = ("text", "image")
    output_fields: ClassVar[dict[str, Any]] = {"logits": "logits_per_image", "embeds": ("image_embeds", "text_embeds")}
    tower_outputs: ClassVar[dict[str, str]] = {"vision": "vision_model_output", "text": "text_model_output"}
    final_norm_in_hidden_states = False
    cls_position: ClassVar[bool] = False

    def bridge_config(self) -> BridgeConfig:
        cfg = vision_config(self.hf_config.vision_config, self.cls_position)
        cfg.architecture = (getattr(self.hf_config, "architectures", None) or [""])[0]
        cfg.model_type = self.hf_config.model_type
        cfg.extra["towers"] = ("vision", "text")
        return cfg


class CLIPAdapter(TwoTowerAdapter):
    """``CLIPModel``: projections at the top, ``hook_image_embeds`` and ``hook_text_embeds`` ``[b, projection_dim]``
    (before normalization); ``text.hook_pooled`` is the final-norm state at each text's EOS position."""

    architectures = ("CLIPModel",)
    model_types = ("clip",)
    cls_position = True

    def component_map(self, cfg: BridgeConfig) -> Composite:
        text = text_tower("text_model")
        text = dataclasses.replace(text, head_hooks={"hook_pooled": Spec(ModuleInput, "text_projection")})
        return Composite(
            towers={
                "vision": Tower(clip_vision_tower("vision_model"), cfg),
                "text": Tower(text, text_config(self.hf_config.text_config)),
            },
            hooks={
                "hook_image_embeds": Spec(ModuleOutput, "visual_projection"),
                "hook_text_embeds": Spec(ModuleOutput, "text_projection"),
            },
        )


class SiglipAdapter(TwoTowerAdapter):
    """``SiglipModel``: no projections outside the towers; ``vision.hook_pooled`` is the attention-pooling head's
    output and ``text.hook_pooled`` the text head's output at the last position (the embeddings, before
    normalization)."""

    architectures = ("SiglipModel",)
    model_types = ("siglip",)

    def component_map(self, cfg: BridgeConfig) -> Composite:
        text = text_tower("text_model")
        text = dataclasses.replace(text, head_hooks={"hook_pooled": Spec(ModuleOutput, "text_model.head")})
        vision = siglip_vision_tower("vision_model", self.hf_config.vision_config)
        return Composite(
            towers={"vision": Tower(vision, cfg), "text": Tower(text, text_config(self.hf_config.text_config))}
        )


ADAPTERS = (
    CLIPVisionAdapter,
    CLIPVisionProjectionAdapter,
    SiglipVisionAdapter,
    Siglip2VisionAdapter,
    CLIPClassifierAdapter,
    SiglipClassifierAdapter,
    ViTAdapter,
    ViTClassifierAdapter,
    Dinov2Adapter,
    CLIPAdapter,
    SiglipAdapter,
)
