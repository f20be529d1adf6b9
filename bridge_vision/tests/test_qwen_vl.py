"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL against HF's own model on the same inputs: M-RoPE (the language model's
``hook_rot_q``/``hook_rot_k`` are the tensors HF's attention reads, recorded from HF's own eager attention), the
image tower's 2-D rotary and its per-image / per-window attention, ``vision_projector.hook_out`` (and Qwen3-VL's
DeepStack mergers) patched vs the image features edited by hand, where each image's tokens sit, text and images
through the model's own processor, text only, and greedy generation with images."""

import copy
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import GenerationConfig, Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen3VLProcessor

import bridge
from bridge.testing import ConformanceError, check_residual_algebra, examples_of, expect_close
from bridge_vision.testing import build_processor, qwen_image_processor, qwen_tokenizer
from bridge_vision.vlm_examples import QWEN_CASES, QWEN_IMAGE_ID, TINY_VOCAB, Qwen3VLExamples

PROCESSORS = {"qwen2_vl": Qwen2VLProcessor, "qwen2_5_vl": Qwen2_5_VLProcessor, "qwen3_vl": Qwen3VLProcessor}


@pytest.fixture(params=list(QWEN_CASES))
def qwen(request):
    return request.param


def inputs_for(pair, batch=2, seed=0):
    return dict(examples_of(type(pair.bridge.adapter)).example_input(pair.bridge.hf_model.config, batch, seed).inputs)


def recorded_attention_inputs(reference, modules, inputs):
    """The query and key every one of ``modules`` hands HF's eager attention function (one entry per call), recorded
    by wrapping that function in the modules' own modeling file while the reference runs on ``inputs``."""
    module_file = sys.modules[type(modules[0]).__module__]
    original = module_file.eager_attention_forward
    seen = {id(m): [] for m in modules}

    def recording(attn, query, key, *args, **kwargs):
        if id(attn) in seen:
            seen[id(attn)].append((query.detach(), key.detach()))
        return original(attn, query, key, *args, **kwargs)

    module_file.eager_attention_forward = recording
    try:
        with torch.no_grad():
            reference(**inputs)
    finally:
        module_file.eager_attention_forward = original
    return [seen[id(m)] for m in modules]


def image_features(reference, inputs):
    """HF's own image features (``get_image_features``): the merged tokens per image, and Qwen3-VL's DeepStack ones."""
    with torch.no_grad():
        return reference.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)


def test_logits_and_hooks_equal_hf_with_every_hook_cached(vlm_pair, qwen):
    pair = vlm_pair(qwen)
    inputs = inputs_for(pair, batch=3, seed=5)
    expected = pair.reference(**inputs).logits
    logits, cache = pair.bridge.run_with_cache(inputs)
    expect_close(logits, expected, f"{qwen}: logits with every hook cached vs HF")
    n_patches = int(inputs["image_grid_thw"].prod(-1).sum())
    vision = pair.bridge.vision_encoder.cfg
    assert cache["vision_encoder.hook_patch_embed"].shape == (1, n_patches, vision.d_model)
    assert cache["vision_encoder.blocks.0.attn.hook_pattern"].shape == (1, vision.n_heads, n_patches, n_patches)
    features = torch.cat(image_features(pair.reference, inputs).pooler_output)[None]  # [1, n_tokens, d_model]
    expect_close(cache["vision_projector.hook_out"], features, f"{qwen}: hook_out vs HF's get_image_features")
    assert cache["vision_projector.hook_out"].shape == (1, (n_patches // 4), pair.bridge.cfg.d_model)


def test_language_rotary_hooks_are_what_hf_attention_reads(vlm_pair, qwen):
    """M-RoPE: ``hook_rot_q``/``hook_rot_k`` of every language-model layer equal the query and key HF's eager
    attention receives (3-D positions from the images' grids), which differ from 1-D RoPE's at the image tokens."""
    pair = vlm_pair(qwen)
    inputs = inputs_for(pair)
    _, cache = pair.bridge.run_with_cache(inputs, names_filter=lambda n: "hook_rot_" in n and "vision" not in n)
    layers = [layer.self_attn for layer in pair.reference.model.language_model.layers]
    for i, calls in enumerate(recorded_attention_inputs(pair.reference, layers, inputs)):
        ((query, key),) = calls  # [b, h, p, d]
        expect_close(cache[f"blocks.{i}.attn.hook_rot_q"], query.transpose(1, 2), f"{qwen}: layer {i} rot_q")
        expect_close(cache[f"blocks.{i}.attn.hook_rot_k"], key.transpose(1, 2), f"{qwen}: layer {i} rot_k")
    cfg = pair.bridge.cfg
    assert cfg.extra["mrope_section"] == [2, 3, 3] and cfg.extra["mrope_axes"] == ("temporal", "height", "width")
    assert cfg.extra["mrope_interleaved"] == (qwen == "qwen3-vl")
    # the same model with text positions only (the images' tokens counted as text) rotates them otherwise
    plain = pair.reference(**{**inputs, "position_ids": torch.arange(inputs["input_ids"].shape[1])[None]}).logits
    assert (plain - pair.reference(**inputs).logits).abs().max() > 1e-3


def test_image_tower_rotary_and_segment_attention(vlm_pair, qwen):
    """The image tower's ``hook_rot_q``/``hook_rot_k`` are HF's rotated query and key (its eager attention's inputs,
    segment by segment, laid end to end); each image (Qwen2.5-VL's windowed block: each window) attends only
    within itself, so the pattern is block-diagonal."""
    pair = vlm_pair(qwen)
    inputs = inputs_for(pair)
    _, cache = pair.bridge.run_with_cache(inputs, names_filter=lambda n: n.startswith("vision_encoder.blocks"))
    blocks = pair.reference.get_submodule(pair.bridge.adapter.vision_root).blocks
    recorded = recorded_attention_inputs(pair.reference, [block.attn for block in blocks], inputs)
    for i, calls in enumerate(recorded):
        query = torch.cat([q for q, _ in calls], dim=2).transpose(1, 2)  # segments [1, h, l, d] -> [1, n, h, d]
        key = torch.cat([k for _, k in calls], dim=2).transpose(1, 2)
        expect_close(cache[f"vision_encoder.blocks.{i}.attn.hook_rot_q"], query, f"{qwen}: vision {i} rot_q")
        expect_close(cache[f"vision_encoder.blocks.{i}.attn.hook_rot_k"], key, f"{qwen}: vision {i} rot_k")
        segment = torch.repeat_interleave(torch.arange(len(calls)), torch.tensor([q.shape[2] for q, _ in calls]))
        outside = segment[:, None] != segment[None, :]
        pattern = cache[f"vision_encoder.blocks.{i}.attn.hook_pattern"][0]  # [h, n, n]
        assert pattern[:, outside].abs().max() == 0
        expect_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)), "pattern rows sum to 1")
    kinds = pair.bridge.vision_encoder.cfg.extra["layer_types"]
    if qwen == "qwen2.5-vl":  # block 0 attends within 2 x 2-patch windows (4 patches), block 1 within each image
        assert kinds == ["window_attention", "full_attention"]
        assert [q.shape[2] for q, _ in recorded[0]] == [4] * 12 and [q.shape[2] for q, _ in recorded[1]] == [16, 32]
    else:
        assert kinds == ["full_attention", "full_attention"]


def test_patch_at_projector_output_equals_editing_the_image_features_by_hand(vlm_pair, qwen):
    pair = vlm_pair(qwen)
    inputs = inputs_for(pair)
    features = image_features(pair.reference, inputs)
    tokens = torch.cat(features.pooler_output)  # [n_tokens, d_model]
    delta = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(3))
    got = pair.bridge.run_with_hooks(inputs, fwd_hooks=[("vision_projector.hook_out", lambda t, hook: t + delta)])
    edited = copy.copy(features)
    edited.pooler_output = torch.split(tokens + delta, [len(t) for t in features.pooler_output])
    rest = {k: v for k, v in inputs.items() if k != "pixel_values"}
    expected = pair.reference(**rest, mm_encoder_outputs={"image": edited}).logits
    expect_close(got, expected, f"{qwen}: hook_out + delta vs the image features + delta by hand")
    assert (expected - pair.reference(**inputs).logits).abs().max() > 1e-2


def test_qwen3_deepstack_features_join_the_stream_after_the_first_blocks(vlm_pair):
    """``blocks.1.hook_resid_pre`` is ``blocks.0.hook_resid_post`` plus ``vision_projector.deepstack.0.hook_out``
    at the image positions, and a patch there equals HF run on DeepStack features edited by hand."""
    pair = vlm_pair("qwen3-vl")
    inputs = inputs_for(pair)
    _, cache = pair.bridge.run_with_cache(inputs)
    deepstack = cache["vision_projector.deepstack.0.hook_out"][0]  # [n_tokens, d_model]
    expected = cache["blocks.0.hook_resid_post"].clone()
    expected[inputs["input_ids"] == QWEN_IMAGE_ID] += deepstack
    expect_close(cache["blocks.1.hook_resid_pre"], expected, "resid_pre of block 1 vs resid_post 0 + DeepStack")
    assert pair.bridge.cfg.extra["deepstack_layers"] == [0]
    features = image_features(pair.reference, inputs)
    expect_close(deepstack, torch.cat(features.deepstack_features[0]), "DeepStack hook vs HF's features")
    delta = torch.randn(deepstack.shape, generator=torch.Generator().manual_seed(4))
    hook = ("vision_projector.deepstack.0.hook_out", lambda t, hook: t + delta)
    got = pair.bridge.run_with_hooks(inputs, fwd_hooks=[hook])
    edited = copy.copy(features)
    sizes = [len(t) for t in features.deepstack_features[0]]
    edited.deepstack_features = [torch.split(torch.cat(features.deepstack_features[0]) + delta, sizes)]
    rest = {k: v for k, v in inputs.items() if k != "pixel_values"}
    expect_close(got, pair.reference(**rest, mm_encoder_outputs={"image": edited}).logits, "DeepStack patch")


def test_image_token_positions_say_where_each_image_sits(vlm_pair, qwen):
    pair = vlm_pair(qwen)
    inputs = inputs_for(pair, batch=3)
    where = pair.bridge.image_token_positions(inputs)
    assert [(img.image, img.batch, len(img.positions)) for img in where] == [(0, 0, 4), (1, 1, 8), (2, 2, 4)]
    assert [img.rows for img in where] == [slice(0, 4), slice(4, 12), slice(12, 16)]
    _, cache = pair.bridge.run_with_cache(inputs, names_filter=["blocks.0.hook_resid_pre", "vision_projector.hook_out"])
    rows = cache["vision_projector.hook_out"].flatten(0, -2)
    for img in where:
        assert (inputs["input_ids"][img.batch, img.positions] == QWEN_IMAGE_ID).all()
        expect_close(cache["blocks.0.hook_resid_pre"][img.batch, img.positions], rows[img.rows], "image rows")
    image = where[1]  # "zero the tokens of image 1" in one line, and only they change
    zeroed = pair.bridge.run_with_hooks(
        inputs, fwd_hooks=[("vision_projector.hook_out", lambda t, hook: t.index_fill(1, torch.arange(4, 12), 0.0))]
    )
    baseline = pair.bridge(inputs)
    moved = (zeroed - baseline).abs().amax(dim=(1, 2))
    assert moved[image.batch] > 1e-3 and moved[0] == 0 and moved[2] == 0


def test_text_and_images_through_the_models_own_processor(vlm_pair, qwen):
    pair = vlm_pair(qwen)
    config = pair.bridge.hf_model.config
    processor = build_processor(
        PROCESSORS[config.model_type], image_processor=qwen_image_processor(config), tokenizer=qwen_tokenizer()
    )
    model = bridge.wrap(copy.deepcopy(pair.reference), qwen_tokenizer(), processor=processor)
    rng = np.random.default_rng(2)
    pictures = [Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)) for size in [(16, 16, 3), (12, 30, 3)]]
    texts = ["a <|vision_start|><|image_pad|><|vision_end|> cat", "<|vision_start|><|image_pad|><|vision_end|> dog"]
    encoded = processor(text=texts, images=pictures, return_tensors="pt", padding=True)
    expected = pair.reference(**encoded).logits
    real = encoded["attention_mask"].bool()
    logits, cache = model.run_with_cache(texts, pixel_values=pictures)
    expect_close(logits[real], expected[real], f"{qwen}: text + PIL images through the processor vs HF on its output")
    expect_close(model(dict(encoded))[real], expected[real], f"{qwen}: the processor's output as one dict")
    tokens = int(encoded["image_grid_thw"].prod(-1).sum()) // 4
    assert cache["vision_projector.hook_out"].shape[:2] == (1, tokens)


def test_text_only_runs_as_the_language_model(vlm_pair, qwen):
    pair = vlm_pair(qwen)
    tokens = torch.randint(1, TINY_VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    expect_close(pair.bridge(tokens), pair.reference(input_ids=tokens).logits, f"{qwen}: text only")


def test_greedy_generation_with_images_equals_hf(vlm_pair, qwen):
    pair = vlm_pair(qwen)
    inputs = inputs_for(pair, batch=1)
    config = GenerationConfig(max_new_tokens=5, do_sample=False, eos_token_id=[], pad_token_id=0)
    mask = torch.ones_like(inputs["input_ids"])
    expected = pair.reference.generate(**inputs, attention_mask=mask, generation_config=config)
    got, steps = pair.bridge.generate(
        inputs,
        max_new_tokens=5,
        do_sample=False,
        stop_at_eos=False,
        return_type="tokens",
        verbose=False,
        names_filter=["vision_projector.hook_out", "blocks.0.attn.hook_rot_q"],
    )
    assert torch.equal(got, expected), (got, expected)
    assert "vision_projector.hook_out" in steps[0] and "vision_projector.hook_out" not in steps[1]


def test_the_kit_needs_deepstack_declared(vlm_pair, monkeypatch):
    """Without ``stream_injections`` naming block 1's ``hook_resid_pre``, the kit's residual check fails there."""
    pair = vlm_pair("qwen3-vl")
    check_residual_algebra(pair)
    monkeypatch.setattr(Qwen3VLExamples, "stream_injections", classmethod(lambda cls, hf_config: ()))
    with pytest.raises(ConformanceError, match=r"blocks\.1\.hook_resid_pre vs blocks\.0\.hook_resid_post"):
        check_residual_algebra(pair)
