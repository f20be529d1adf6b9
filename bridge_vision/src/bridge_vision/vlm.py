"""Vision-language models: an image tower and a projector in front of a language model (LLaVA, Gemma 3; the Qwen-VL
models are in ``qwen_vl.py``).

One bridge out of three parts (a core ``Composite``): the language model is the root tower, so its hooks are
the plain text names (``blocks.3.attn.hook_pattern``) and text-model code runs unchanged; the image tower's
hooks are under ``vision_encoder.`` and the projector's under ``vision_projector.`` (``hook_in``: the image
features it reads, ``hook_out``: the image tokens as the language model receives them, one row per image
token). The language model's component map is not written here: its adapter comes from the plugin registry,
by the text config (Llama, Mistral, Qwen2, Gemma 3 … whatever family plugin is installed).
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
import transformers

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, Norm, SplitQKV
from bridge.kernel import (
    BridgeConfig,
    ComponentMapError,
    Composite,
    Tower,
    UnknownArchitectureError,
    config_from_hf,
    get_registry,
)
from bridge_vision.components import (
    MethodOutput,
    ModuleInput,
    ModuleOutput,
    ParameterScaleBlock,
    PatchEmbedding,
    PositionEmbedding,
)
from bridge_vision.towers import ENCODER_BLOCK, clip_vision_tower, siglip_vision_tower, vision_config

VISION_TOWERS = ("clip_vision_model", "siglip_vision_model")


def language_adapter(vlm: str, hf_text_config: Any, layout: str | None = None) -> type[Adapter]:
    """The installed adapter of a vision-language model's language model, found by its text config (or, with
    ``layout``, by that ``model_type``: a language model laid out as a text family's under another name).

    Raises ``UnknownArchitectureError`` naming the model, its language model and the plugin to install."""
    model_type = getattr(hf_text_config, "model_type", None)
    try:
        if layout is None:
            return get_registry().resolve(hf_text_config)
        return get_registry().resolve(types.SimpleNamespace(model_type=layout, architectures=None))
    except UnknownArchitectureError as exc:
        laid_out = f", laid out as {layout!r}" if layout else ""
        raise UnknownArchitectureError(
            f"{vlm}: its language model (model_type {model_type!r}{laid_out}) is bridged by that language family's "
            f"plugin, and none is installed. {exc}"
        ) from None


@dataclass(frozen=True)
class ImageTokens:
    """Where one image's tokens sit (``model.image_token_positions(inputs)`` gives one per image, in order):
    ``batch`` and ``positions`` ``[n]`` index the sequence (``resid[img.batch, img.positions]`` are its tokens in
    any ``[b, p, d]`` hook), ``rows`` are its rows of ``vision_projector.hook_out`` flattened to
    ``[n_image_tokens_total, d_model]`` (``hook_out.flatten(0, -2)[img.rows]``)."""

    image: int
    batch: int
    positions: torch.Tensor
    rows: slice


def locate_image_tokens(image_mask: torch.Tensor, counts: list[int] | None = None) -> list[ImageTokens]:
    """The ``ImageTokens`` of each image from where the image tokens are (``image_mask`` ``[b, p]``), row by row:
    ``counts`` tokens per image in order, or, without counts, each unbroken run of image tokens one image."""
    found: list[ImageTokens] = []
    start = 0
    pending = list(counts) if counts is not None else None
    for row in range(image_mask.shape[0]):
        positions = torch.nonzero(image_mask[row])[:, 0]
        if pending is None:
            breaks = torch.nonzero(positions.diff() != 1)[:, 0] + 1
            groups = torch.tensor_split(positions, breaks.tolist()) if len(positions) else ()
        else:
            sizes = []
            while sum(sizes) < len(positions) and pending:
                sizes.append(pending.pop(0))
            groups = torch.split(positions, sizes) if sizes else ()
        for group in groups:
            found.append(ImageTokens(len(found), row, group, slice(start, start + len(group))))
            start += len(group)
    return found


class VisionLanguageAdapter(Adapter):
    """Common ground of the vision-language models: where the parts sit, how they are put together.

    ``model.cfg`` is the language model's config; ``model.vision_encoder.cfg`` the image tower's. Inputs are
    a language model's (text or tokens, where the image tokens stand for the images) with ``pixel_values=``."""

    modalities = ("text", "image")
    language_root: ClassVar[str] = "model.language_model"
    vision_root: ClassVar[str] = "model.vision_tower"
    projector: ClassVar[str] = "model.multi_modal_projector"
    unembed: ClassVar[str] = "lm_head"
    #: Text ``model_type`` → the ``model_type`` whose installed adapter maps the language model, for language
    #: models laid out as a text family's under a name of their own (Qwen2-VL's ``qwen2_vl_text`` is Qwen2's).
    language_layouts: ClassVar[Mapping[str, str]] = {}

    @cached_property
    def language(self) -> Adapter:
        """The language model's adapter (from the installed plugins), on the text config."""
        text = self.hf_config.text_config
        layout = self.language_layouts.get(getattr(text, "model_type", ""))
        return language_adapter(type(self).__name__, text, layout)(text)

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

    def projector_hooks(self) -> dict[str, Spec]:
        """The hook points of the projector, paths from the top-level model: ``vision_projector.hook_in`` (what it
        reads) and ``vision_projector.hook_out`` (the image tokens as the language model receives them)."""
        return {
            "vision_projector.hook_in": Spec(ModuleInput, self.projector),
            "vision_projector.hook_out": Spec(ModuleOutput, self.projector),
        }

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
            hooks=self.projector_hooks(),
        )

    @classmethod
    def image_tokens(cls, hf_config: Any) -> int:
        """How many image tokens stand for one image in the text."""
        raise NotImplementedError(f"{cls.__name__} must define image_tokens()")

    def image_token_counts(self, inputs: Mapping[str, Any]) -> list[int] | None:
        """The number of image tokens of each image of ``inputs`` (HF forward inputs), in order; ``None``: each
        unbroken run of image tokens is one image. Default: ``image_tokens`` per image."""
        n_images = int((inputs["input_ids"] == self.hf_config.image_token_id).sum()) // self.image_tokens(
            self.hf_config
        )
        return [self.image_tokens(self.hf_config)] * n_images

    def image_token_positions(self, inputs: Mapping[str, Any]) -> list[ImageTokens]:
        """Where each image's tokens sit in ``inputs`` (HF forward inputs with ``input_ids``), see ``ImageTokens``."""
        mask = inputs["input_ids"] == self.hf_config.image_token_id
        return locate_image_tokens(mask, self.image_token_counts(inputs))


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


class LlavaNextAdapter(LlavaAdapter):
    """``LlavaNextForConditionalGeneration`` (any-resolution tiling): each image is cut into crops (the whole image
    resized first, then a grid of crops, ``image_grid_pinpoints``), the image tower runs on every crop: its hooks are
    ``[n_crops_total, p, …]``, image 0's crops first (its resized whole first, then its grid row by row), then
    image 1's… ``vision_projector.hook_in`` ``[n_crops_total, n_patches, d_vision]`` is the projector's input;
    ``vision_projector.hook_out`` ``[1, n_image_tokens_total, d_model]`` the image tokens as the language model
    receives them (HF's ``get_image_features``): per image the whole image's tokens, then the grid's, unpadded to
    the image's aspect ratio, each row of them followed by the learned ``image_newline`` token."""

    architectures = ("LlavaNextForConditionalGeneration",)
    model_types = ("llava_next",)
    #: HF's model class, whose ``pack_image_features`` says how many tokens each image has.
    hf_model_class: ClassVar[str] = "LlavaNextModel"

    def projector_hooks(self) -> dict[str, Spec]:
        return {
            "vision_projector.hook_in": Spec(ModuleInput, self.projector),
            "vision_projector.hook_out": Spec(
                MethodOutput, "model", {"method": "get_image_features", "field": "pooler_output"}
            ),
        }

    def image_token_counts(self, inputs: Mapping[str, Any]) -> list[int] | None:
        sizes = inputs.get("image_sizes")
        return None if sizes is None else anyres_token_counts(self.hf_config, self.hf_model_class, sizes)


class LlavaOnevisionAdapter(LlavaNextAdapter):
    """``LlavaOnevisionForConditionalGeneration``: LLaVA-NeXT's tiling with a SigLIP tower (all its positions read),
    a grid of more than ``vision_aspect_ratio``'s crops' worth of tokens resized down bilinearly before the newline
    tokens; hooks as LLaVA-NeXT's. Several images in one text are not tiled (one crop each, HF's
    ``batch_num_images``)."""

    architectures = ("LlavaOnevisionForConditionalGeneration",)
    model_types = ("llava_onevision",)
    hf_model_class = "LlavaOnevisionModel"


class PaliGemmaAdapter(VisionLanguageAdapter):
    """``PaliGemmaForConditionalGeneration`` (PaliGemma 1 and 2): a SigLIP tower read after its final norm
    (``vision_encoder.ln_post``), one linear projector, a Gemma (PaliGemma 2: Gemma 2) language model. The prefix
    (the image tokens and the prompt, ``token_type_ids`` 0) attends both ways, the suffix causally; positions count
    from 1, which HF computes (the bridge passes none). ``vision_projector.hook_out`` ``[b_images, n_patches,
    d_model]`` is the projector's output, which is what the language model receives at the image tokens (as for
    text embeddings, the Gemma language model then scales its whole input by ``sqrt(d_model)``, seen in
    ``blocks.0.hook_resid_pre``; transformers 5 no longer divides the image features by it first)."""

    architectures = ("PaliGemmaForConditionalGeneration",)
    model_types = ("paligemma",)
    computes_positions = True

    def vision_tower(self) -> ComponentMap:
        self._vision_kind()
        tower = siglip_vision_tower(self.vision_root, self.hf_config.vision_config)
        return dataclasses.replace(tower, head_hooks={})

    @classmethod
    def image_tokens(cls, hf_config: Any) -> int:
        vision = hf_config.vision_config
        return (vision.image_size // vision.patch_size) ** 2


class Idefics3Adapter(VisionLanguageAdapter):
    """``Idefics3ForConditionalGeneration``: a SigLIP-like tower (positions looked up per image from its patch grid,
    padded patches masked) read after its final norm (``vision_encoder.ln_post``), then the pixel-shuffle connector:
    ``vision_projector.hook_in`` ``[n_images, n_patches, d_vision]`` its input, ``vision_projector.hook_pixel_shuffle``
    ``[n_images, n_patches / s², d_vision · s²]`` each ``s x s`` block of patches concatenated (``s``:
    ``scale_factor``), ``vision_projector.hook_out`` ``[n_images, n_patches / s², d_model]`` its linear projection,
    the image tokens the language model receives. The processor splits each image into tiles plus the whole image
    resized; each is an image here (``pixel_values`` ``[b, max_images, …]``, all-zero padding images dropped)."""

    architectures = ("Idefics3ForConditionalGeneration",)
    model_types = ("idefics3",)
    language_root = "model.text_model"
    vision_root = "model.vision_model"
    projector = "model.connector"

    def vision_tower(self) -> ComponentMap:
        return ComponentMap(
            root=self.vision_root,
            blocks="encoder.layers",
            block=ENCODER_BLOCK,
            hooks={
                "hook_patch_embed": Spec(PatchEmbedding, "embeddings.patch_embedding"),
                "hook_pos_embed": Spec(PositionEmbedding, "embeddings", {"source": "lookup"}),
            },
            extra={"ln_post": Spec(Norm, "post_layernorm")},
        )

    def vision_cfg(self) -> BridgeConfig:
        return vision_config(self.hf_config.vision_config, cls_position=False)

    def projector_hooks(self) -> dict[str, Spec]:
        return {
            **super().projector_hooks(),
            "vision_projector.hook_pixel_shuffle": Spec(ModuleInput, f"{self.projector}.modality_projection"),
        }

    @classmethod
    def image_tokens(cls, hf_config: Any) -> int:
        vision = hf_config.vision_config
        return (vision.image_size // vision.patch_size) ** 2 // hf_config.scale_factor**2


class SmolVLMAdapter(Idefics3Adapter):
    """``SmolVLMForConditionalGeneration``: Idefics3's layout and hooks."""

    architectures = ("SmolVLMForConditionalGeneration",)
    model_types = ("smolvlm",)


#: InternViT's layers: pre-norm, per-channel layer scales (``lambda_1``/``lambda_2``), ``dropout`` after the MLP.
INTERNVIT_BLOCK = BlockSpec(
    ParameterScaleBlock,
    {
        "ln1": Spec(Norm, "layernorm_before"),
        "attn": Spec(Attention, "attention", {"qkv": SplitQKV(), "out": "projection_layer"}),
        "ln2": Spec(Norm, "layernorm_after"),
        "mlp": Spec(MLP, "mlp", {"pre": "fc1", "out": "fc2"}),
    },
    extra_paths={"attn_dropout": "attention.projection_dropout", "mlp_dropout": "dropout"},
)


class InternVLAdapter(VisionLanguageAdapter):
    """``InternVLForConditionalGeneration``: InternViT (CLS + patches, positions resized to the image's grid, layer
    scales, q/k RMS norms with ``use_qk_norm``: ``attn.hook_q``/``hook_k`` are then before them), then the tower's
    output with CLS dropped, pixel-shuffled (each 2 x 2 block of patches concatenated, HF's ``pixel_shuffle``) and
    projected by a norm + two-layer MLP: ``vision_projector.hook_in`` ``[n_images, n_patches / 4, d_vision · 4]`` is
    that pixel-shuffled input, ``vision_projector.hook_out`` ``[n_images, n_patches / 4, d_model]`` the image tokens
    the language model receives. The processor's tiles (up to ``max_patches`` and a thumbnail) are images here."""

    architectures = ("InternVLForConditionalGeneration",)
    model_types = ("internvl",)

    def vision_tower(self) -> ComponentMap:
        vision = self.hf_config.vision_config
        ln_post = {} if vision.use_mean_pooling else {"ln_post": Spec(Norm, "layernorm")}
        return ComponentMap(
            root=self.vision_root,
            blocks="encoder.layer",
            block=INTERNVIT_BLOCK,
            hooks={
                "hook_patch_embed": Spec(PatchEmbedding, "embeddings.patch_embeddings.projection"),
                "hook_pos_embed": Spec(PositionEmbedding, "embeddings", {"source": "parameter"}),
            },
            extra=ln_post,
        )

    def vision_cfg(self) -> BridgeConfig:
        vision = self.hf_config.vision_config
        patches = (vision.image_size[0] // vision.patch_size[0]) * (vision.image_size[1] // vision.patch_size[1])
        return config_from_hf(vision, d_vocab=0, n_ctx=patches + 1, positional_embedding_type="standard")

    @classmethod
    def image_tokens(cls, hf_config: Any) -> int:
        vision = hf_config.vision_config
        patches = (vision.image_size[0] // vision.patch_size[0]) * (vision.image_size[1] // vision.patch_size[1])
        return int(patches * hf_config.downsample_ratio**2)


def anyres_token_counts(hf_config: Any, model_class: str, image_sizes: torch.Tensor) -> list[int]:
    """The image tokens of each image of sizes ``image_sizes`` ``[n_images, 2]`` in an any-resolution LLaVA: HF's own
    ``pack_image_features`` run on stand-in features of one channel (crops from HF's ``image_size_to_num_patches``)."""
    module = sys.modules[getattr(transformers, model_class).__module__]
    vision = hf_config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2 + int(vision.model_type.startswith("clip"))
    if hf_config.vision_feature_select_strategy == "default":
        patches -= 1  # HF drops the first position (CLS)
    features = [torch.zeros(n, patches, 1) for n in anyres_crops(hf_config, model_class, image_sizes)]
    stub = types.SimpleNamespace(config=hf_config)
    if model_class == "LlavaNextModel":
        strategy = hf_config.vision_feature_select_strategy
        _, lengths = module.LlavaNextModel.pack_image_features(stub, features, image_sizes, strategy, torch.zeros(1))
    else:
        ratio = hf_config.vision_aspect_ratio
        _, lengths = module.LlavaOnevisionModel.pack_image_features(stub, features, image_sizes, torch.zeros(1), ratio)
    return lengths.tolist()


def anyres_crops(hf_config: Any, model_class: str, image_sizes: torch.Tensor) -> list[int]:
    """How many crops an any-resolution LLaVA cuts each image of ``image_sizes`` ``[n_images, 2]`` into (the whole
    image resized, then the grid), by HF's own ``image_size_to_num_patches``."""
    module = sys.modules[getattr(transformers, model_class).__module__]
    size = hf_config.vision_config.image_size
    return [
        module.image_size_to_num_patches(image, hf_config.image_grid_pinpoints, size) for image in image_sizes.tolist()
    ]


VLM_ADAPTERS = (
    LlavaAdapter,
    Gemma3VisionAdapter,
    LlavaNextAdapter,
    LlavaOnevisionAdapter,
    PaliGemmaAdapter,
    Idefics3Adapter,
    SmolVLMAdapter,
    InternVLAdapter,
)
