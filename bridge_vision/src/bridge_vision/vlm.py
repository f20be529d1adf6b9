"""Vision-language models: LLaVA and Gemma 3, an image tower and a projector in front of a language model.

One bridge out of three parts (a core ``Composite``): the language model is the root tower, so its hooks are
the plain text names (``blocks.3.attn.hook_pattern``) and text-model code runs unchanged; the image tower's
hooks are under ``vision_encoder.`` and the projector's under ``vision_projector.`` (``hook_in``: the image
features it reads, ``hook_out``: the image tokens as the language model receives them, one row per image
token). The language model's component map is not written here: its adapter comes from the plugin registry,
by the text config (Llama, Mistral, Qwen2, Gemma 3 … whatever family plugin is installed).
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any, ClassVar

from bridge import Adapter, ComponentMap, Spec
from bridge.kernel import (
    BridgeConfig,
    ComponentMapError,
    Composite,
    Tower,
    UnknownArchitectureError,
    get_registry,
)
from bridge_vision.components import ModuleInput, ModuleOutput
from bridge_vision.towers import clip_vision_tower, siglip_vision_tower, vision_config

VISION_TOWERS = ("clip_vision_model", "siglip_vision_model")


def language_adapter(vlm: str, hf_text_config: Any) -> type[Adapter]:
    """The installed adapter of a vision-language model's language model, found by its text config.

    Raises ``UnknownArchitectureError`` naming the model, its language model and the plugin to install."""
    try:
        return get_registry().resolve(hf_text_config)
    except UnknownArchitectureError as exc:
        raise UnknownArchitectureError(
            f"{vlm}: its language model (model_type {getattr(hf_text_config, 'model_type', None)!r}) is bridged by "
            f"that language family's plugin, and none is installed. {exc}"
        ) from None


class VisionLanguageAdapter(Adapter):
    """Common ground of the vision-language models: where the parts sit, how they are put together.

    ``model.cfg`` is the language model's config; ``model.vision_encoder.cfg`` the image tower's. Inputs are
    a language model's (text or tokens, where the image tokens stand for the images) with ``pixel_values=``."""

    modalities = ("text", "image")
    language_root: ClassVar[str] = "model.language_model"
    vision_root: ClassVar[str] = "model.vision_tower"
    projector: ClassVar[str] = "model.multi_modal_projector"
    unembed: ClassVar[str] = "lm_head"

    @cached_property
    def language(self) -> Adapter:
        """The language model's adapter (from the installed plugins), on the text config."""
        text = self.hf_config.text_config
        return language_adapter(type(self).__name__, text)(text)

    def bridge_config(self) -> BridgeConfig:
        cfg = self.language.bridge_config()
        cfg.architecture = (getattr(self.hf_config, "architectures", None) or [""])[0]
        cfg.model_type = self.hf_config.model_type
        cfg.extra["towers"] = ("vision_encoder",)
        cfg.extra["language_adapter"] = self.language.describe()
        return cfg

    def vision_tower(self) -> ComponentMap:
        """The image tower's component map, paths from the top-level model."""
        raise NotImplementedError(f"{type(self).__name__} must define vision_tower()")

    def vision_cfg(self) -> BridgeConfig:
        hf_vision = self.hf_config.vision_config
        return vision_config(hf_vision, cls_position=hf_vision.model_type.startswith("clip"))

    def _vision_kind(self) -> str:
        kind = self.hf_config.vision_config.model_type
        if kind not in VISION_TOWERS:
            raise ComponentMapError(
                f"{type(self).__name__}: its image tower is a {kind!r}; bridge-vision maps the image towers "
                f"{list(VISION_TOWERS)}."
            )
        return kind

    def component_map(self, cfg: BridgeConfig) -> Composite:
        text = self.language.component_map(cfg)
        if not isinstance(text, ComponentMap):
            raise ComponentMapError(
                f"{type(self).__name__}: the language model's adapter {self.language.describe()} gives a composite "
                "map; a vision-language model's language model must be one component map."
            )
        text = dataclasses.replace(text, root=self.language_root, head_unembed=text.head_unembed or self.unembed)
        return Composite(
            towers={"": Tower(text, cfg), "vision_encoder": Tower(self.vision_tower(), self.vision_cfg())},
            hooks={
                "vision_projector.hook_in": Spec(ModuleInput, self.projector),
                "vision_projector.hook_out": Spec(ModuleOutput, self.projector),
            },
        )

    @classmethod
    def image_tokens(cls, hf_config: Any) -> int:
        """How many image tokens stand for one image in the text."""
        raise NotImplementedError(f"{cls.__name__} must define image_tokens()")


class LlavaAdapter(VisionLanguageAdapter):
    """``LlavaForConditionalGeneration``: a CLIP (or SigLIP) image tower, read at ``vision_feature_layer``
    (``hidden_states`` of the tower: before its final norm, which is therefore not hooked), patch positions
    only with the ``"default"`` strategy (CLS dropped), a two-layer MLP projector, any installed language model."""

    architectures = ("LlavaForConditionalGeneration",)
    model_types = ("llava",)

    def vision_tower(self) -> ComponentMap:
        root = self.vision_root
        if self._vision_kind() == "clip_vision_model":
            tower = clip_vision_tower(root)
        else:
            tower = siglip_vision_tower(root, self.hf_config.vision_config)
        extra = {name: spec for name, spec in tower.extra.items() if name != "ln_post"}
        return dataclasses.replace(tower, extra=extra, head_hooks={})

    @classmethod
    def image_tokens(cls, hf_config: Any) -> int:
        vision = hf_config.vision_config
        return (vision.image_size // vision.patch_size) ** 2


class Gemma3VisionAdapter(VisionLanguageAdapter):
    """``Gemma3ForConditionalGeneration``: a SigLIP image tower (its final norm hooked as ``ln_post``), a
    projector that average-pools the patch grid to ``mm_tokens_per_image`` tokens, RMS-normalizes and projects
    them, and the Gemma 3 language model (image tokens attend to each other both ways when ``token_type_ids``
    marks them, as the processor does)."""

    architectures = ("Gemma3ForConditionalGeneration",)
    model_types = ("gemma3",)

    def vision_tower(self) -> ComponentMap:
        self._vision_kind()
        tower = siglip_vision_tower(self.vision_root, self.hf_config.vision_config)
        return dataclasses.replace(tower, head_hooks={})

    @classmethod
    def image_tokens(cls, hf_config: Any) -> int:
        return hf_config.mm_tokens_per_image


VLM_ADAPTERS = (LlavaAdapter, Gemma3VisionAdapter)
