"""Examples of the vision-language adapters: tiny configs (each language model a tiny one of its family, built from
transformers' config classes) and inputs holding the image tokens."""

from __future__ import annotations

import sys
import types
from typing import Any

import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    Gemma2Config,
    Gemma3Config,
    Gemma3TextConfig,
    GemmaConfig,
    Idefics3Config,
    InternVLConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaNextConfig,
    LlavaOnevisionConfig,
    MistralConfig,
    PaliGemmaConfig,
    Qwen2_5_VLConfig,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen3VLConfig,
    SiglipVisionConfig,
    SmolVLMConfig,
)

from bridge import Adapter
from bridge.kernel import TINY_VOCAB, ExampleInput, Examples
from bridge_vision.qwen_vl import Qwen2_5_VLAdapter, Qwen3VLAdapter, QwenVLAdapter
from bridge_vision.tiny import IMAGE_TOKEN_ID, TEXT_POSITIONS, TINY_IMAGE, TINY_TEXT_LM, TINY_TOWER, random_pixels
from bridge_vision.vlm import (
    Gemma3VisionAdapter,
    Idefics3Adapter,
    InternVLAdapter,
    LlavaAdapter,
    LlavaNextAdapter,
    LlavaOnevisionAdapter,
    PaliGemmaAdapter,
    SmolVLMAdapter,
    VisionLanguageAdapter,
    anyres_crops,
    anyres_token_counts,
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
        positions = cls.adapter(hf_config).vision_cfg().n_ctx  # patches, and CLS where the tower has one
        return ExampleInput(inputs, {"": tuple(tokens.shape), "vision_encoder": (batch, positions)})


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


class PaliGemmaExamples(VisionLanguageExamples):
    adapter = PaliGemmaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None, text_config: Any = None) -> PaliGemmaConfig:
        """A tiny PaliGemma: SigLIP tower, Gemma language model (``text_config``: another, PaliGemma 2's Gemma 2)."""
        return PaliGemmaConfig(
            vision_config=SiglipVisionConfig(**TINY_TOWER, **TINY_IMAGE, vision_use_head=False),
            text_config=text_config or GemmaConfig(**TINY_TEXT_LM, head_dim=16),
            image_token_index=IMAGE_TOKEN_ID,
            projection_dim=TINY_TEXT_LM["hidden_size"],
            hidden_size=TINY_TEXT_LM["hidden_size"],
            architectures=[architecture or cls.adapter.architectures[0]],
        )

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """PaliGemma 2: a Gemma 2 language model (soft-capped logits, sliding-window layers)."""
        gemma2 = Gemma2Config(**TINY_TEXT_LM, head_dim=16, sliding_window=8)
        return {"paligemma2": cls.example_config(text_config=gemma2)}

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        """As PaliGemma's processor lays a prompt out: the image tokens, BOS, the prompt, then the suffix; the prefix
        marked ``token_type_ids`` 0 (attends both ways), the suffix (the last 3 text tokens) 1."""
        example = super().example_input(hf_config, batch, seed)
        tokens = example.inputs["input_ids"]  # [b, 1 + n_image + text]: BOS first
        n_image = cls.adapter.image_tokens(hf_config)
        tokens = torch.cat([tokens[:, 1 : 1 + n_image], tokens[:, :1], tokens[:, 1 + n_image :]], dim=1)
        token_types = torch.zeros_like(tokens)
        token_types[:, -3:] = 1
        inputs = {**example.inputs, "input_ids": tokens, "token_type_ids": token_types}
        return ExampleInput(inputs, example.shapes)


class Idefics3Examples(VisionLanguageExamples):
    adapter = Idefics3Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        """A tiny Idefics3 (or SmolVLM): a 4 x 4-patch tower, 2 x 2 pixel shuffle (4 image tokens), Llama."""
        config_class = SmolVLMConfig if (architecture or "").startswith("SmolVLM") else Idefics3Config
        return config_class(
            vision_config=dict(**TINY_TOWER, **TINY_IMAGE),
            text_config=LlamaConfig(**{**TINY_TEXT_LM, "vocab_size": TINY_VOCAB + 3}),  # + the processor's 2 tokens
            image_token_id=IMAGE_TOKEN_ID,
            scale_factor=2,
            architectures=[architecture or cls.adapter.architectures[0]],
        )

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        """One image per row: ``pixel_values`` ``[b, 1, channels, 16, 16]``."""
        example = super().example_input(hf_config, batch, seed)
        inputs = {**example.inputs, "pixel_values": example.inputs["pixel_values"][:, None]}
        return ExampleInput(inputs, example.shapes)

    @classmethod
    def reference_part(
        cls, adapter: Adapter, prefix: str, n_layers: int, reference: nn.Module, inputs: Any, output: Any
    ) -> tuple[Any, tuple[str, ...]]:
        if prefix != "vision_encoder":
            return super().reference_part(adapter, prefix, n_layers, reference, inputs, output)
        tower = reference.get_submodule(adapter.vision_root)
        with torch.no_grad():
            out = tower(inputs["pixel_values"].flatten(0, 1), output_hidden_states=True, output_attentions=True)
        return out, Adapter.hidden_state_hooks(n_layers)


class SmolVLMExamples(Idefics3Examples):
    adapter = SmolVLMAdapter


class InternVLExamples(VisionLanguageExamples):
    adapter = InternVLAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> InternVLConfig:
        """A tiny InternVL: InternViT with layer scales 0.5 (± the tiny model's noise), 2 x 2 pixel shuffle (4 image
        tokens), Qwen2 language model."""
        vision = dict(**TINY_TOWER, image_size=[16, 16], patch_size=[4, 4], layer_scale_init_value=0.5)
        return InternVLConfig(
            vision_config=vision,
            text_config=Qwen2Config(**{**TINY_TEXT_LM, "vocab_size": TINY_VOCAB + 4}),  # + <img>, </img>, <video>
            image_token_id=IMAGE_TOKEN_ID,
            downsample_ratio=0.5,
            architectures=[architecture or cls.adapter.architectures[0]],
        )

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """InternViT-6B's layout: q/k RMS norms, a final layer norm (no mean pooling)."""
        config = cls.example_config()
        config.vision_config.use_qk_norm = True
        config.vision_config.use_mean_pooling = False
        return {"internvl-qk-norm": config}


#: The image sizes ``(height, width)`` of the any-resolution examples, image ``i`` the ``i % 2``-th: tiled into a
#: 1 x 2 and a 2 x 2 grid of 16-pixel crops (``ANYRES_PINPOINTS``) and unpadded to their aspect ratios.
ANYRES_SIZES = ((20, 32), (32, 24))
ANYRES_PINPOINTS = [[16, 32], [32, 16], [32, 32]]


class LlavaNextExamples(VisionLanguageExamples):
    adapter = LlavaNextAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        """A tiny LLaVA-NeXT: CLIP tower (16-pixel crops, read at its last layer), Llama language model."""
        return LlavaNextConfig(
            vision_config=CLIPVisionConfig(**TINY_TOWER, **TINY_IMAGE),
            text_config=LlamaConfig(**TINY_TEXT_LM),
            image_token_index=IMAGE_TOKEN_ID,
            vision_feature_layer=-1,
            image_grid_pinpoints=ANYRES_PINPOINTS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        """Row ``i``: BOS, the image tokens of image ``i`` (size ``ANYRES_SIZES[i % 2]``), then random text filling
        every row to one length; random crops ``[b, max_crops, channels, 16, 16]`` and ``image_sizes``."""
        vision = hf_config.vision_config
        sizes = torch.tensor([ANYRES_SIZES[i % 2] for i in range(batch)])
        model_class = cls.adapter.hf_model_class
        counts, crops = anyres_token_counts(hf_config, model_class, sizes), anyres_crops(hf_config, model_class, sizes)
        generator = torch.Generator().manual_seed(seed + 1)
        rows = []
        for count in counts:
            text = torch.randint(1, TINY_VOCAB, (TEXT_POSITIONS + max(counts) - count,), generator=generator)
            rows.append(torch.cat([torch.tensor([0, *[hf_config.image_token_id] * count]), text]))
        tokens = torch.stack(rows)  # [b, 1 + max(counts) + TEXT_POSITIONS]
        size = vision.image_size
        shape = (batch, max(crops), vision.num_channels, size, size)
        pixels = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        inputs = {"input_ids": tokens, "pixel_values": pixels, "image_sizes": sizes}
        positions = (size // vision.patch_size) ** 2 + int(vision.model_type.startswith("clip"))
        return ExampleInput(inputs, {"": tuple(tokens.shape), "vision_encoder": (sum(crops), positions)})

    @classmethod
    def reference_part(
        cls, adapter: Adapter, prefix: str, n_layers: int, reference: nn.Module, inputs: Any, output: Any
    ) -> tuple[Any, tuple[str, ...]]:
        """The image tower's hidden states and attentions: HF's tower run on every image's crops (as HF cuts the
        padded ``[b, max_crops, …]`` down to each image's crops)."""
        if prefix != "vision_encoder":
            return super().reference_part(adapter, prefix, n_layers, reference, inputs, output)
        crops = anyres_crops(reference.config, cls.adapter.hf_model_class, inputs["image_sizes"])
        pixels = torch.cat([image[:n] for image, n in zip(inputs["pixel_values"], crops, strict=True)])
        tower = reference.get_submodule(adapter.vision_root)
        with torch.no_grad():
            out = tower(pixel_values=pixels, output_hidden_states=True, output_attentions=True)
        return out, Adapter.hidden_state_hooks(n_layers)


class LlavaOnevisionExamples(LlavaNextExamples):
    adapter = LlavaOnevisionAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        """A tiny LLaVA-OneVision: SigLIP tower (every position read), Qwen2 language model; a grid of more than one
        crop's worth of tokens is resized down (``anyres_max_1``), so the 2 x 2 grid's is."""
        return LlavaOnevisionConfig(
            vision_config=SiglipVisionConfig(**TINY_TOWER, **TINY_IMAGE, vision_use_head=False),
            text_config=Qwen2Config(**TINY_TEXT_LM),
            image_token_index=IMAGE_TOKEN_ID,
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_1",
            image_grid_pinpoints=ANYRES_PINPOINTS,
            architectures=[architecture or cls.adapter.architectures[0]],
        )


#: Qwen-VL token ids after the tiny tokenizer's: the image, video, vision-start and vision-end tokens.
QWEN_IMAGE_ID, QWEN_VIDEO_ID, QWEN_VISION_START_ID, QWEN_VISION_END_ID = range(TINY_VOCAB, TINY_VOCAB + 4)
#: A tiny Qwen-VL language model: M-RoPE over the 8 rotary frequencies of a 16-wide head (temporal 2, height 3,
#: width 3).
QWEN_TEXT = {
    **TINY_TEXT_LM,
    "vocab_size": TINY_VOCAB + 4,
    "max_position_embeddings": 128,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10_000.0, "mrope_section": [2, 3, 3]},
}
#: Patches 4 x 4 pixels, two frames per temporal patch, each 2 x 2 block of patches merged into one image token.
QWEN_PATCHES = dict(patch_size=4, temporal_patch_size=2, spatial_merge_size=2, in_channels=3)
#: The patch grid ``(t, h, w)`` of image ``i`` of the example inputs: ``QWEN_GRIDS[i % 2]`` (4 and 8 image tokens).
QWEN_GRIDS = ((1, 4, 4), (1, 4, 8))


class QwenVLExamples(VisionLanguageExamples):
    adapter = QwenVLAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        architecture = architecture or cls.adapter.architectures[0]
        ids = dict(
            image_token_id=QWEN_IMAGE_ID,
            video_token_id=QWEN_VIDEO_ID,
            vision_start_token_id=QWEN_VISION_START_ID,
            vision_end_token_id=QWEN_VISION_END_ID,
        )
        if architecture == "Qwen2VLForConditionalGeneration":
            vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, **QWEN_PATCHES)
            return Qwen2VLConfig(text_config=QWEN_TEXT, vision_config=vision, architectures=[architecture], **ids)
        vision = dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=64, **QWEN_PATCHES)
        if architecture == "Qwen2_5_VLForConditionalGeneration":  # block 0 in 2 x 2-patch windows, block 1 full
            vision.update(window_size=8, fullatt_block_indexes=[1])
            return Qwen2_5_VLConfig(text_config=QWEN_TEXT, vision_config=vision, architectures=[architecture], **ids)
        # Qwen3-VL: a 4 x 4 position table interpolated to each grid; DeepStack from image block 0 into text block 0
        vision.update(num_position_embeddings=16, deepstack_visual_indexes=[0])
        text = {
            **QWEN_TEXT,
            "head_dim": 16,
            "rope_parameters": {**QWEN_TEXT["rope_parameters"], "mrope_interleaved": True},
        }
        return Qwen3VLConfig(text_config=text, vision_config=vision, architectures=[architecture], **ids)

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput:
        """Row ``i``: BOS, vision start, the image tokens of image ``i`` (grid ``QWEN_GRIDS[i % 2]``), vision end,
        then random text filling every row to one length; flattened random patches, one image per row."""
        vision = hf_config.vision_config
        grids = torch.tensor([QWEN_GRIDS[i % 2] for i in range(batch)])
        counts = (grids.prod(-1) // vision.spatial_merge_size**2).tolist()
        generator = torch.Generator().manual_seed(seed + 1)
        rows = []
        for count in counts:
            text = torch.randint(1, TINY_VOCAB, (TEXT_POSITIONS + max(counts) - count,), generator=generator)
            image = [
                hf_config.vision_start_token_id,
                *[hf_config.image_token_id] * count,
                hf_config.vision_end_token_id,
            ]
            rows.append(torch.cat([torch.tensor([0, *image]), text]))
        tokens = torch.stack(rows)  # [b, 3 + max(counts) + TEXT_POSITIONS]
        width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        n_patches = int(grids.prod(-1).sum())
        pixels = torch.randn(n_patches, width, generator=torch.Generator().manual_seed(seed))
        inputs = {
            "input_ids": tokens,
            "pixel_values": pixels,
            "image_grid_thw": grids,
            "mm_token_type_ids": (tokens == hf_config.image_token_id).int(),
        }
        return ExampleInput(inputs, {"": tuple(tokens.shape), "vision_encoder": (1, n_patches)})

    @classmethod
    def reference_part(
        cls, adapter: Adapter, prefix: str, n_layers: int, reference: nn.Module, inputs: Any, output: Any
    ) -> tuple[Any, tuple[str, ...]]:
        """The image tower's hidden states (``[n, d]`` as ``[1, n, d]``) and its eager attention patterns: HF's
        tower returns none (its attention drops them), so its own ``eager_attention_forward`` is recorded segment
        by segment and the segments' patterns are laid on the diagonal of ``[1, n_heads, n, n]``."""
        if prefix != "vision_encoder":
            return super().reference_part(adapter, prefix, n_layers, reference, inputs, output)
        tower = reference.get_submodule(adapter.vision_root)
        return reference_tower_patterns(tower, inputs), Adapter.hidden_state_hooks(n_layers)

    @classmethod
    def stream_injections(cls, hf_config: Any) -> tuple[str, ...]:
        """Qwen3-VL's DeepStack adds image features to the stream after text block ``j`` (``j`` < their count)."""
        deepstack = getattr(hf_config.vision_config, "deepstack_visual_indexes", None) or []
        return tuple(f"blocks.{j + 1}.hook_resid_pre" for j in range(len(deepstack)))


class Qwen2_5_VLExamples(QwenVLExamples):
    adapter = Qwen2_5_VLAdapter


class Qwen3VLExamples(QwenVLExamples):
    adapter = Qwen3VLAdapter


def reference_tower_patterns(tower: nn.Module, inputs: Any) -> Any:
    """Run a Qwen-VL image tower (the HF reference's) on ``inputs``: its hidden states ``[1, n, d]`` and, per block,
    the block-diagonal eager pattern ``[1, n_heads, n, n]`` assembled from its per-segment attention calls."""
    module = sys.modules[type(tower.blocks[0].attn).__module__]
    original = module.eager_attention_forward
    calls: dict[int, list[torch.Tensor]] = {}

    def recording(attn: nn.Module, query: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out, weights = original(attn, query, *args, **kwargs)
        calls.setdefault(id(attn), []).append(weights.detach())
        return out, weights

    module.eager_attention_forward = recording
    try:
        with torch.no_grad():
            out = tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"], output_hidden_states=True)
    finally:
        module.eager_attention_forward = original
    patterns = []
    for block in tower.blocks:
        segments = calls[id(block.attn)]
        n = sum(w.shape[-1] for w in segments)
        full = segments[0].new_zeros(1, segments[0].shape[1], n, n)
        start = 0
        for w in segments:  # [1, h, l, l] on the diagonal
            full[:, :, start : start + w.shape[-1], start : start + w.shape[-1]] = w
            start += w.shape[-1]
        patterns.append(full)
    hidden = tuple(h[None] for h in out.hidden_states)
    return types.SimpleNamespace(hidden_states=hidden, attentions=tuple(patterns))


#: The examples of every vision-language adapter.
VLM_EXAMPLES = (
    LlavaExamples,
    Gemma3VisionExamples,
    LlavaNextExamples,
    LlavaOnevisionExamples,
    PaliGemmaExamples,
    Idefics3Examples,
    SmolVLMExamples,
    InternVLExamples,
    QwenVLExamples,
    Qwen2_5_VLExamples,
    Qwen3VLExamples,
)

#: Every tiny vision-language model of the tests, by id: (adapter, HF config).
VLM_CASES: dict[str, tuple[type[VisionLanguageAdapter], Any]] = {
    "llava-llama": (LlavaAdapter, LlavaExamples.example_config()),
    **{name: (LlavaAdapter, config) for name, config in LlavaExamples.conformance_configs().items()},
    "gemma3": (Gemma3VisionAdapter, Gemma3VisionExamples.example_config()),
    "paligemma": (PaliGemmaAdapter, PaliGemmaExamples.example_config()),
    **{name: (PaliGemmaAdapter, config) for name, config in PaliGemmaExamples.conformance_configs().items()},
    "idefics3": (Idefics3Adapter, Idefics3Examples.example_config()),
    "smolvlm": (SmolVLMAdapter, SmolVLMExamples.example_config("SmolVLMForConditionalGeneration")),
    "internvl": (InternVLAdapter, InternVLExamples.example_config()),
    **{name: (InternVLAdapter, config) for name, config in InternVLExamples.conformance_configs().items()},
}
#: The ids of ``VLM_CASES`` built from the examples' ``conformance_configs`` (real-checkpoint variants).
VARIANT_CASES = frozenset(
    name for examples in (LlavaExamples, PaliGemmaExamples, InternVLExamples) for name in examples.conformance_configs()
)
#: The any-resolution LLaVAs of the tests, by id.
ANYRES_CASES: dict[str, tuple[type[VisionLanguageAdapter], Any]] = {
    "llava-next": (LlavaNextAdapter, LlavaNextExamples.example_config()),
    "llava-onevision": (LlavaOnevisionAdapter, LlavaOnevisionExamples.example_config()),
}
#: The Qwen-VL models of the tests, by id.
QWEN_CASES: dict[str, tuple[type[VisionLanguageAdapter], Any]] = {
    "qwen2-vl": (QwenVLAdapter, QwenVLExamples.example_config()),
    "qwen2.5-vl": (Qwen2_5_VLAdapter, Qwen2_5_VLExamples.example_config()),
    "qwen3-vl": (Qwen3VLAdapter, Qwen3VLExamples.example_config()),
}
