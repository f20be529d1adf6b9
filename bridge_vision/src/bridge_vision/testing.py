"""Tiny saved vision models for tests: the adapter's example model with an image processor beside it (and for
vision-language models, the tokenizer with the image token, and the processor where HF has one to build here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import (
    BitImageProcessor,
    CLIPImageProcessor,
    GotOcr2ImageProcessor,
    Idefics3ImageProcessor,
    Idefics3Processor,
    InternVLProcessor,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaProcessor,
    PaliGemmaProcessor,
    Qwen2VLImageProcessor,
    Siglip2ImageProcessor,
    SiglipImageProcessor,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    ViTImageProcessor,
)

from bridge.testing import AdapterLike, examples_of, save_tiny_model, tiny_tokenizer
from bridge_vision.vlm import InternVLAdapter


def example_image_processor(config: Any) -> Any:
    """An image processor for a (tiny) config, built here: nothing is downloaded."""
    if config.model_type in ("idefics3", "smolvlm"):
        kind = Idefics3ImageProcessor if config.model_type == "idefics3" else SmolVLMImageProcessor
        size = config.vision_config.image_size  # tiles of the tower's size, images up to 2 x 2 tiles
        return kind(size={"longest_edge": 2 * size}, max_image_size={"longest_edge": size})
    if config.model_type in ("llava_next", "llava_onevision"):
        return anyres_image_processor(config)
    vision = getattr(config, "vision_config", None) or config
    if vision.model_type.startswith("siglip2"):
        return Siglip2ImageProcessor(patch_size=vision.patch_size, max_num_patches=vision.num_patches)
    size = vision.image_size
    if vision.model_type.startswith("clip"):
        return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    if vision.model_type == "vit":
        return ViTImageProcessor(size={"height": size, "width": size})
    if vision.model_type.startswith("dinov2"):  # as the DINOv2 checkpoints: resize the short side, crop the centre
        return BitImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return SiglipImageProcessor(size={"height": size, "width": size})


def save_example_model(adapter: AdapterLike, architecture: str, directory: str | Path, seed: int = 0) -> Path:
    """The adapter's seeded tiny model, the tiny tokenizer and an image processor, saved to ``directory``."""
    config = examples_of(adapter).example_config(architecture)
    directory = save_tiny_model(config, directory, seed=seed)
    example_image_processor(config).save_pretrained(directory)
    return directory


def vlm_tokenizer() -> Any:
    """The tiny tokenizer with ``<image>`` added as its last id (``bridge_vision.vlm.IMAGE_TOKEN_ID``)."""
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.image_token = "<image>"
    tokenizer.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    return tokenizer


def save_example_vlm(adapter: AdapterLike, directory: str | Path, config: Any = None, seed: int = 0) -> Path:
    """A vision-language model (``config``, or the adapter's example one) saved with the tokenizer holding the
    image token(s), its image processor, and for LLaVA the ``LlavaProcessor`` (text and images together; Qwen-VL's
    processors cannot be loaded without torchvision, see ``build_processor``)."""
    config = config or examples_of(adapter).example_config()
    directory = save_tiny_model(config, directory, seed=seed)
    qwen = config.model_type.startswith("qwen")
    tokenizer = qwen_tokenizer() if qwen else vlm_tokenizer()
    if config.model_type in ("idefics3", "smolvlm"):
        tokenizer.add_tokens(list(IDEFICS3_TOKENS), special_tokens=True)
    tokenizer.save_pretrained(directory)
    image_processor = qwen_image_processor(config) if qwen else example_image_processor(config)
    image_processor.save_pretrained(directory)
    if config.model_type == "llava_next":
        anyres_processor(config, tokenizer, image_processor).save_pretrained(directory)
    if config.model_type == "idefics3":
        idefics3_processor(config, tokenizer, image_processor).save_pretrained(directory)
    if config.model_type == "paligemma":
        image_processor.image_seq_length = config.text_config.num_image_tokens
        PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    if config.model_type == "llava":
        vision = config.vision_config
        cls = int(vision.model_type.startswith("clip"))
        LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=vision.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            num_additional_image_tokens=cls,
        ).save_pretrained(directory)
    return directory


#: Qwen-VL's special tokens, in the order of their ids after the tiny tokenizer's (``vlm_examples.QWEN_IMAGE_ID``…).
QWEN_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def qwen_tokenizer() -> Any:
    """The tiny tokenizer with Qwen-VL's image, video and vision start/end tokens added (ids 128–131)."""
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(list(QWEN_TOKENS), special_tokens=True)
    return tokenizer


def qwen_image_processor(config: Any) -> Any:
    """Qwen2-VL's image processor (PIL backend) for a tiny config: images resized to a multiple of
    ``patch · merge`` pixels per side, between 8 x 8 and 16 x 32 pixels."""
    vision = config.vision_config
    factor = vision.patch_size * vision.spatial_merge_size
    return Qwen2VLImageProcessor(
        patch_size=vision.patch_size,
        temporal_patch_size=vision.temporal_patch_size,
        merge_size=vision.spatial_merge_size,
        size={"shortest_edge": factor * factor, "longest_edge": 2 * (2 * factor) ** 2},
    )


def build_processor(processor_class: type, **parts: Any) -> Any:
    """``processor_class(**parts)``. A processor with a ``video_processor`` cannot be built by transformers 5.23
    without torchvision, even with none (its class check looks up ``VideoProcessorMixin``, which transformers does
    not export then): such a processor is built with that one check skipped and no video processor, so that its
    text and image path (HF's own code) can run."""
    if "video_processor" not in processor_class.get_attributes():
        return processor_class(**parts)
    try:
        return processor_class(video_processor=None, **parts)
    except (AttributeError, ValueError):
        pass
    processor = processor_class.__new__(processor_class)
    check = processor_class.check_argument_for_proper_class
    processor_class.check_argument_for_proper_class = lambda self, name, arg: None  # type: ignore[method-assign]
    try:
        processor.__init__(video_processor=None, **parts)
    finally:
        processor_class.check_argument_for_proper_class = check  # type: ignore[method-assign]
    return processor


def anyres_image_processor(config: Any) -> Any:
    """LLaVA-NeXT's (or LLaVA-OneVision's) image processor for a tiny config: crops of the tower's size, the config's
    grid pinpoints, CLIP's normalization (PIL backend)."""
    size = config.vision_config.image_size
    kind = LlavaNextImageProcessor if config.model_type == "llava_next" else LlavaOnevisionImageProcessor
    options = {"crop_size": {"height": size, "width": size}} if config.model_type == "llava_next" else {}
    shortest = {"shortest_edge": size} if config.model_type == "llava_next" else {"height": size, "width": size}
    return kind(size=shortest, image_grid_pinpoints=config.image_grid_pinpoints, **options)


def anyres_processor(config: Any, tokenizer: Any, image_processor: Any) -> Any:
    """The any-resolution LLaVA's own processor (LLaVA-OneVision's through ``build_processor``)."""
    vision = config.vision_config
    if config.model_type == "llava_next":
        return LlavaNextProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=vision.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            num_additional_image_tokens=int(vision.model_type.startswith("clip")),
        )
    return build_processor(
        LlavaOnevisionProcessor,
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=(vision.image_size // vision.patch_size) ** 2,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_aspect_ratio=config.vision_aspect_ratio,
    )


#: The tokens Idefics3's and SmolVLM's processors add around each image tile (ids 129, 130 after ``<image>``).
IDEFICS3_TOKENS = ("<fake_token_around_image>", "<global-img>")


def idefics3_processor(config: Any, tokenizer: Any, image_processor: Any) -> Any:
    """Idefics3's (or SmolVLM's, through ``build_processor``) own processor: ``image_seq_len`` tokens per tile."""
    vision = config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2
    if config.model_type == "idefics3":
        return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=tokens)
    return build_processor(SmolVLMProcessor, image_processor=image_processor, tokenizer=tokenizer, image_seq_len=tokens)


def internvl_tokenizer() -> Any:
    """The tiny tokenizer with InternVL's image tokens: ``<IMG_CONTEXT>`` (the image token, id 128), ``<img>``,
    ``</img>`` and ``<video>``, named as InternVL's processor reads them."""
    tokenizer = tiny_tokenizer()
    names = {"context_image_token": "<IMG_CONTEXT>", "start_image_token": "<img>", "end_image_token": "</img>"}
    tokenizer.add_tokens([*names.values(), "<video>"], special_tokens=True)
    for name, token in names.items():
        setattr(tokenizer, name, token)
        setattr(tokenizer, f"{name}_id", tokenizer.convert_tokens_to_ids(token))
    tokenizer.video_token = "<video>"
    return tokenizer


def internvl_processor(config: Any) -> Any:
    """InternVL's own processor (through ``build_processor``): tiles of the tower's size, up to 4 and a thumbnail."""
    size = config.vision_config.image_size
    image_processor = GotOcr2ImageProcessor(
        size={"height": size[0], "width": size[1]}, crop_to_patches=True, min_patches=1, max_patches=4
    )
    tokens = InternVLAdapter.image_tokens(config)
    return build_processor(
        InternVLProcessor, image_processor=image_processor, tokenizer=internvl_tokenizer(), image_seq_length=tokens
    )
