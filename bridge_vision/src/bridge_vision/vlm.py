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

import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3TextConfig,
    LlamaConfig,
    LlavaConfig,
    MistralConfig,
    Qwen2Config,
    SiglipVisionConfig,
)

from bridge import Adapter, ComponentMap, Spec
from bridge.kernel import (
    BridgeConfig,
    ComponentMapError,
    Composite,
    ExampleInput,
    Tower,
    UnknownArchitectureError,
    get_registry,
)
from bridge.testing import TINY_VOCAB
from bridge_vision.adapters import TINY_IMAGE, TINY_TOWER, random_pixels
from bridge_vision.components import ModuleInput, ModuleOutput
from bridge_vision.towers import clip_vision_tower, siglip_vision_tower, vision_config

#: The tiny language models' vocabulary: the tiny tokenizer's, plus the image token (the last id).
TINY_VLM_VOCAB = TINY_VOCAB + 1
IMAGE_TOKEN_ID = TINY_VOCAB
#: A tiny Llama-layout text config (built from transformers' config classes, not from a family plugin).
TINY_TEXT_LM = dict(
    num_hidden_layers=2,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    vocab_size=TINY_VLM_VOCAB,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)
#: Prompt text positions of example inputs, after the BOS and the image tokens.
TEXT_POSITIONS = 6

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

    def reference_part(
        self, prefix: str, n_layers: int, reference: nn.Module, inputs: Any, output: Any
    ) -> tuple[Any, tuple[str, ...]]:
        """The language model's hidden states are the model's; the image tower's come from running the
        reference's own image tower on the pixel values."""
        if prefix != "vision_encoder":
            return output, type(self.language).hidden_state_hooks(n_layers)
        tower = reference.get_submodule(self.vision_root)
        with torch.no_grad():
            out = tower(pixel_values=inputs["pixel_values"], output_hidden_states=True, output_attentions=True)
        return out, Adapter.hidden_state_hooks(n_layers)

    @classmethod
    def image_tokens(cls, hf_config: Any) -> int:
        """How many image tokens stand for one image in the text."""
        raise NotImplementedError(f"{cls.__name__} must define image_tokens()")

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        """BOS, the image tokens of one image, then random text, per row; random pixel values."""
        vision = hf_config.vision_config
        n_image = cls.image_tokens(hf_config)
        generator = torch.Generator().manual_seed(seed + 1)
        text = torch.randint(1, TINY_VOCAB, (batch, TEXT_POSITIONS), generator=generator)
        image = torch.full((batch, n_image), hf_config.image_token_id)
        tokens = torch.cat([torch.zeros(batch, 1, dtype=torch.long), image, text], dim=1)  # [b, 1 + n_image + text]
        inputs = {"input_ids": tokens, "pixel_values": random_pixels(vision, batch, seed)}
        patches = (vision.image_size // vision.patch_size) ** 2 + int(vision.model_type.startswith("clip"))
        return ExampleInput(inputs, {"": tuple(tokens.shape), "vision_encoder": (batch, patches)})


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

    @classmethod
    def example_config(cls, architecture: str | None = None, text_config: Any = None) -> LlavaConfig:
        """A tiny LLaVA: CLIP tower, Llama language model (``text_config``: another one), read at the
        tower's last layer (so every tower hook reaches the logits; real checkpoints read the one before)."""
        return LlavaConfig(
            vision_config=CLIPVisionConfig(**TINY_TOWER, **TINY_IMAGE),
            text_config=text_config or LlamaConfig(**TINY_TEXT_LM),
            image_token_index=IMAGE_TOKEN_ID,
            vision_feature_layer=-1,
            architectures=[architecture or cls.architectures[0]],
        )

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """LLaVA with other language families: Qwen2 (q/k/v biases) and Mistral (sliding window)."""
        return {
            "llava-qwen2": cls.example_config(text_config=Qwen2Config(**TINY_TEXT_LM)),
            "llava-mistral": cls.example_config(text_config=MistralConfig(**TINY_TEXT_LM, sliding_window=8)),
        }


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

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Gemma3Config:
        text = Gemma3TextConfig(
            **TINY_TEXT_LM,
            head_dim=16,
            query_pre_attn_scalar=24,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            },
        )
        return Gemma3Config(
            vision_config=SiglipVisionConfig(**TINY_TOWER, **TINY_IMAGE, vision_use_head=False),
            text_config=text,
            mm_tokens_per_image=4,  # the 4 x 4 patch grid pooled to 2 x 2
            image_token_index=IMAGE_TOKEN_ID,
            boi_token_index=1,
            eoi_token_index=2,
            architectures=[architecture or cls.architectures[0]],
        )

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        """As the processor marks images: ``token_type_ids`` 1 on the image tokens (they attend both ways)."""
        example = super().example_input(hf_config, batch, seed)
        tokens = example.inputs["input_ids"]
        inputs = {**example.inputs, "token_type_ids": (tokens == hf_config.image_token_id).long()}
        return ExampleInput(inputs, example.shapes)


VLM_ADAPTERS = (LlavaAdapter, Gemma3VisionAdapter)
#: Every tiny vision-language model of the tests, by id: (adapter, HF config).
VLM_CASES: dict[str, tuple[type[VisionLanguageAdapter], Any]] = {
    "llava-llama": (LlavaAdapter, LlavaAdapter.example_config()),
    **{name: (LlavaAdapter, config) for name, config in LlavaAdapter.conformance_configs().items()},
    "gemma3": (Gemma3VisionAdapter, Gemma3VisionAdapter.example_config()),
}
