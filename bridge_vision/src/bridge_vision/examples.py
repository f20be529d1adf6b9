"""Examples of the bridge_vision adapters: tiny configs and inputs for the conformance kit and tests."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3TextConfig,
    LlamaConfig,
    LlavaConfig,
    MistralConfig,
    Qwen2Config,
    Siglip2VisionConfig,
    SiglipConfig,
    SiglipVisionConfig,
)

from bridge import Adapter
from bridge.kernel import TINY_SPECIAL_IDS, TINY_VOCAB, ExampleInput, Examples
from bridge_vision.adapters import (
    CLIPAdapter,
    CLIPClassifierAdapter,
    CLIPVisionAdapter,
    CLIPVisionProjectionAdapter,
    Siglip2VisionAdapter,
    SiglipAdapter,
    SiglipClassifierAdapter,
    SiglipVisionAdapter,
    TwoTowerAdapter,
    VisionAdapter,
)
from bridge_vision.vlm import Gemma3VisionAdapter, LlavaAdapter, VisionLanguageAdapter

TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_IMAGE = dict(image_size=16, patch_size=4)  # a 4 x 4 grid of patches
TINY_TEXT = dict(vocab_size=TINY_VOCAB, max_position_embeddings=32, **TINY_SPECIAL_IDS, **TINY_TOWER)


def random_pixels(hf_vision_config: Any, batch: int, seed: int) -> torch.Tensor:
    """``[batch, channels, image_size, image_size]``, normal noise (the range a normalized image has)."""
    size = hf_vision_config.image_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, hf_vision_config.num_channels, size, size, generator=generator)


def random_tokens(batch: int, pos: int, seed: int) -> torch.Tensor:
    """Random ordinary tokens (no special id: CLIP pools its text at the first EOS)."""
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randint(max(TINY_SPECIAL_IDS.values()) + 2, TINY_VOCAB, (batch, pos), generator=generator)


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
    **TINY_SPECIAL_IDS,
)
#: Prompt text positions of example inputs, after the BOS and the image tokens.
TEXT_POSITIONS = 6


class VisionExamples(Examples):
    adapter = VisionAdapter

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        vision = getattr(hf_config, "vision_config", None) or hf_config
        patches = (vision.image_size // vision.patch_size) ** 2
        return ExampleInput(
            {"pixel_values": random_pixels(vision, batch, seed)}, {"": (batch, patches + cls.adapter.cls_position)}
        )


class CLIPVisionExamples(VisionExamples):
    adapter = CLIPVisionAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> CLIPVisionConfig:
        return CLIPVisionConfig(
            **TINY_TOWER, **TINY_IMAGE, projection_dim=24, architectures=[architecture or cls.adapter.architectures[0]]
        )


class CLIPVisionProjectionExamples(CLIPVisionExamples):
    adapter = CLIPVisionProjectionAdapter


class SiglipVisionExamples(VisionExamples):
    adapter = SiglipVisionAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> SiglipVisionConfig:
        return SiglipVisionConfig(
            **TINY_TOWER, **TINY_IMAGE, architectures=[architecture or cls.adapter.architectures[0]]
        )


class Siglip2VisionExamples(VisionExamples):
    adapter = Siglip2VisionAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Siglip2VisionConfig:
        return Siglip2VisionConfig(**TINY_TOWER, num_patches=16, patch_size=4, architectures=["Siglip2VisionModel"])

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        """Every image a full 4 x 4 grid but the last, a 2 x 4 grid padded to ``num_patches`` slots."""
        slots, width = hf_config.num_patches, hf_config.num_channels * hf_config.patch_size**2
        generator = torch.Generator().manual_seed(seed)
        pixels = torch.randn(batch, slots, width, generator=generator)
        shapes = torch.tensor([[4, 4]] * batch)
        mask = torch.ones(batch, slots, dtype=torch.long)
        if batch > 1:
            shapes[-1] = torch.tensor([2, 4])
            mask[-1, 8:] = 0
            pixels[-1, 8:] = 0.0
        inputs = {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": shapes}
        return ExampleInput(inputs, {"": (batch, slots)})


class CLIPClassifierExamples(VisionExamples):
    adapter = CLIPClassifierAdapter

    unread_hooks = ("ln_post.hook_scale", "ln_post.hook_normalized")  # HF's classifier reads the patches before ln_post

    @classmethod
    def example_config(cls, architecture: str | None = None) -> CLIPConfig:
        return CLIPConfig(
            vision_config=dict(**TINY_TOWER, **TINY_IMAGE),
            text_config=TINY_TEXT,
            num_labels=5,
            architectures=["CLIPForImageClassification"],
        )


class SiglipClassifierExamples(VisionExamples):
    adapter = SiglipClassifierAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> SiglipConfig:
        return SiglipConfig(
            vision_config=dict(**TINY_TOWER, **TINY_IMAGE),
            text_config=TINY_TEXT,
            num_labels=5,
            architectures=["SiglipForImageClassification"],
        )


class TwoTowerExamples(Examples):
    adapter = TwoTowerAdapter

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        vision = hf_config.vision_config
        pixels = random_pixels(vision, batch, seed)
        patches = (vision.image_size // vision.patch_size) ** 2 + int(cls.adapter.cls_position)
        tokens = random_tokens(batch + 1, 7, seed)
        tokens[:, -1] = hf_config.text_config.eos_token_id  # the pooled text position: the last, so attention matters
        inputs = {"input_ids": tokens, "pixel_values": pixels}
        return ExampleInput(inputs, {"vision": (batch, patches), "text": (batch + 1, 7)})


class CLIPExamples(TwoTowerExamples):
    adapter = CLIPAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> CLIPConfig:
        return CLIPConfig(
            vision_config=dict(**TINY_TOWER, **TINY_IMAGE),
            text_config=TINY_TEXT,
            projection_dim=24,
            architectures=["CLIPModel"],
        )


class SiglipExamples(TwoTowerExamples):
    adapter = SiglipAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> SiglipConfig:
        return SiglipConfig(
            vision_config=dict(**TINY_TOWER, **TINY_IMAGE),
            text_config=dict(**TINY_TEXT, projection_size=32),
            architectures=["SiglipModel"],
        )


class VisionLanguageExamples(Examples):
    adapter = VisionLanguageAdapter

    @classmethod
    def reference_part(
        cls, adapter: Adapter, prefix: str, n_layers: int, reference: nn.Module, inputs: Any, output: Any
    ) -> tuple[Any, tuple[str, ...]]:
        """The language model's hidden states are the model's; the image tower's come from running the
        reference's own image tower on the pixel values."""
        if prefix != "vision_encoder":
            return output, type(adapter.language).hidden_state_hooks(n_layers)
        tower = reference.get_submodule(adapter.vision_root)
        with torch.no_grad():
            out = tower(pixel_values=inputs["pixel_values"], output_hidden_states=True, output_attentions=True)
        return out, Adapter.hidden_state_hooks(n_layers)

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        """BOS, the image tokens of one image, then random text, per row; random pixel values."""
        vision = hf_config.vision_config
        n_image = cls.adapter.image_tokens(hf_config)
        generator = torch.Generator().manual_seed(seed + 1)
        text = torch.randint(1, TINY_VOCAB, (batch, TEXT_POSITIONS), generator=generator)
        image = torch.full((batch, n_image), hf_config.image_token_id)
        tokens = torch.cat([torch.zeros(batch, 1, dtype=torch.long), image, text], dim=1)  # [b, 1 + n_image + text]
        inputs = {"input_ids": tokens, "pixel_values": random_pixels(vision, batch, seed)}
        patches = (vision.image_size // vision.patch_size) ** 2 + int(vision.model_type.startswith("clip"))
        return ExampleInput(inputs, {"": tuple(tokens.shape), "vision_encoder": (batch, patches)})


class LlavaExamples(VisionLanguageExamples):
    adapter = LlavaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None, text_config: Any = None) -> LlavaConfig:
        """A tiny LLaVA: CLIP tower, Llama language model (``text_config``: another one), read at the
        tower's last layer (so every tower hook reaches the logits; real checkpoints read the one before)."""
        return LlavaConfig(
            vision_config=CLIPVisionConfig(**TINY_TOWER, **TINY_IMAGE),
            text_config=text_config or LlamaConfig(**TINY_TEXT_LM),
            image_token_index=IMAGE_TOKEN_ID,
            vision_feature_layer=-1,
            architectures=[architecture or cls.adapter.architectures[0]],
        )

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """LLaVA with other language families: Qwen2 (q/k/v biases) and Mistral (sliding window)."""
        return {
            "llava-qwen2": cls.example_config(text_config=Qwen2Config(**TINY_TEXT_LM)),
            "llava-mistral": cls.example_config(text_config=MistralConfig(**TINY_TEXT_LM, sliding_window=8)),
        }


class Gemma3VisionExamples(VisionLanguageExamples):
    adapter = Gemma3VisionAdapter

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
            architectures=[architecture or cls.adapter.architectures[0]],
        )

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        """As the processor marks images: ``token_type_ids`` 1 on the image tokens (they attend both ways)."""
        example = super().example_input(hf_config, batch, seed)
        tokens = example.inputs["input_ids"]
        inputs = {**example.inputs, "token_type_ids": (tokens == hf_config.image_token_id).long()}
        return ExampleInput(inputs, example.shapes)


#: Every tiny vision-language model of the tests, by id: (adapter, HF config).
VLM_CASES: dict[str, tuple[type[VisionLanguageAdapter], Any]] = {
    "llava-llama": (LlavaAdapter, LlavaExamples.example_config()),
    **{name: (LlavaAdapter, config) for name, config in LlavaExamples.conformance_configs().items()},
    "gemma3": (Gemma3VisionAdapter, Gemma3VisionExamples.example_config()),
}


#: The examples of every adapter the family registers.
EXAMPLES = (
    CLIPVisionExamples,
    CLIPVisionProjectionExamples,
    SiglipVisionExamples,
    Siglip2VisionExamples,
    CLIPClassifierExamples,
    SiglipClassifierExamples,
    CLIPExamples,
    SiglipExamples,
    LlavaExamples,
    Gemma3VisionExamples,
)
