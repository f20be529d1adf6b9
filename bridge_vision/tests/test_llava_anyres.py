"""LLaVA-NeXT and LLaVA-OneVision (any-resolution tiling) against HF's own model on the same inputs: the image
tower's hooks per crop in HF's order, ``vision_projector.hook_out`` holding every image token the language model
receives (the unpadded grid, the ``image_newline`` tokens, OneVision's resized grid) and a patch there equal to
the image features edited by hand, where each image's tokens sit, text and images through the model's own
processor, and greedy generation with images."""

import copy

import einops
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import GenerationConfig

import bridge
from bridge.testing import examples_of, expect_close
from bridge_vision.testing import anyres_image_processor, anyres_processor, vlm_tokenizer
from bridge_vision.vlm import anyres_crops
from bridge_vision.vlm_examples import ANYRES_CASES, IMAGE_TOKEN_ID


@pytest.fixture(params=list(ANYRES_CASES))
def anyres(request):
    return request.param


def inputs_for(pair, batch=2, seed=0):
    return dict(examples_of(type(pair.bridge.adapter)).example_input(pair.bridge.hf_model.config, batch, seed).inputs)


def image_features(reference, inputs):
    with torch.no_grad():
        return reference.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"], return_dict=True)


def test_hook_out_holds_every_image_token_the_language_model_receives(vlm_pair, anyres):
    pair = vlm_pair(anyres)
    inputs = inputs_for(pair)
    logits, cache = pair.bridge.run_with_cache(inputs)
    expect_close(logits, pair.reference(**inputs).logits, f"{anyres}: logits with every hook cached vs HF")
    features = image_features(pair.reference, inputs).pooler_output  # per image [n_i, d_model]
    expect_close(cache["vision_projector.hook_out"], torch.cat(features)[None], f"{anyres}: hook_out vs HF")
    n_tokens = int((inputs["input_ids"] == IMAGE_TOKEN_ID).sum())
    assert cache["vision_projector.hook_out"].shape == (1, n_tokens, pair.bridge.cfg.d_model)
    newline = pair.reference.model.image_newline.detach()
    is_newline = (cache["vision_projector.hook_out"][0] == newline).all(-1)
    assert is_newline.sum() > 0  # the newline tokens are among the rows, one after each row of the grid
    resid = cache["blocks.0.hook_resid_pre"][inputs["input_ids"] == IMAGE_TOKEN_ID]
    expect_close(resid, cache["vision_projector.hook_out"][0], "the image rows of the residual stream are hook_out")


def test_image_tower_hooks_run_per_crop_in_hf_order(vlm_pair, anyres):
    """Row ``k`` of the tower's hooks is crop ``k`` of every image's crops laid end to end: ``hook_patch_embed``
    equals HF's patch convolution of that crop, and the projector's input its last block's output."""
    pair = vlm_pair(anyres)
    inputs = inputs_for(pair)
    _, cache = pair.bridge.run_with_cache(inputs)
    crops = anyres_crops(pair.reference.config, pair.bridge.adapter.hf_model_class, inputs["image_sizes"])
    pixels = torch.cat([image[:n] for image, n in zip(inputs["pixel_values"], crops, strict=True)])  # [n_crops, …]
    conv = pair.reference.model.vision_tower.embeddings.patch_embedding
    with torch.no_grad():
        expected = einops.rearrange(conv(pixels), "c d h w -> c (h w) d")
    expect_close(cache["vision_encoder.hook_patch_embed"], expected, f"{anyres}: patch embeddings per crop")
    assert cache["vision_encoder.blocks.0.hook_resid_pre"].shape[0] == sum(crops) == 10
    last = cache[f"vision_encoder.blocks.{pair.bridge.vision_encoder.cfg.n_layers - 1}.hook_resid_post"]
    cls = int(pair.bridge.hf_model.config.vision_config.model_type.startswith("clip"))
    expect_close(cache["vision_projector.hook_in"], last[:, cls:], "hook_in is the last block's output per crop")


def test_patch_at_hook_out_equals_editing_the_image_features_by_hand(vlm_pair, anyres):
    pair = vlm_pair(anyres)
    inputs = inputs_for(pair)
    features = image_features(pair.reference, inputs)
    rows = torch.cat(features.pooler_output)
    delta = torch.randn(rows.shape, generator=torch.Generator().manual_seed(3))
    got = pair.bridge.run_with_hooks(inputs, fwd_hooks=[("vision_projector.hook_out", lambda t, hook: t + delta)])
    edited = copy.copy(features)
    edited.pooler_output = list(torch.split(rows + delta, [len(f) for f in features.pooler_output]))
    rest = {k: v for k, v in inputs.items() if k != "pixel_values"}
    expected = pair.reference(**rest, mm_encoder_outputs={"image": edited}).logits
    expect_close(got, expected, f"{anyres}: hook_out + delta vs the image features + delta by hand")
    assert (expected - pair.reference(**inputs).logits).abs().max() > 1e-2


def test_image_token_positions(vlm_pair, anyres):
    pair = vlm_pair(anyres)
    inputs = inputs_for(pair, batch=3)
    where = pair.bridge.image_token_positions(inputs)
    counts = pair.bridge.adapter.image_token_counts(inputs)
    assert [len(img.positions) for img in where] == counts and [img.batch for img in where] == [0, 1, 2]
    assert where[1].rows == slice(counts[0], counts[0] + counts[1])
    for img in where:
        assert (inputs["input_ids"][img.batch, img.positions] == IMAGE_TOKEN_ID).all()


def test_text_and_images_through_the_models_own_processor(vlm_pair, anyres):
    pair = vlm_pair(anyres)
    config = pair.bridge.hf_model.config
    processor = anyres_processor(config, vlm_tokenizer(), anyres_image_processor(config))
    model = bridge.wrap(copy.deepcopy(pair.reference), vlm_tokenizer(), processor=processor)
    rng = np.random.default_rng(2)
    pictures = [Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)) for size in [(20, 32, 3), (32, 24, 3)]]
    texts = ["a <image> cat", "<image> dog"]
    encoded = processor(text=texts, images=pictures, return_tensors="pt", padding=True)
    expected = pair.reference(**encoded).logits
    real = encoded["attention_mask"].bool()
    logits, cache = model.run_with_cache(texts, pixel_values=pictures)
    expect_close(logits[real], expected[real], f"{anyres}: text + PIL images through the processor vs HF")
    assert cache["vision_projector.hook_out"].shape[1] == int((encoded["input_ids"] == IMAGE_TOKEN_ID).sum())


def test_greedy_generation_with_images_equals_hf(vlm_pair, anyres):
    pair = vlm_pair(anyres)
    inputs = inputs_for(pair, batch=1)
    config = GenerationConfig(max_new_tokens=4, do_sample=False, eos_token_id=[], pad_token_id=0)
    mask = torch.ones_like(inputs["input_ids"])
    expected = pair.reference.generate(**inputs, attention_mask=mask, generation_config=config)
    got = pair.bridge.generate(
        inputs, max_new_tokens=4, do_sample=False, stop_at_eos=False, return_type="tokens", verbose=False
    )
    assert torch.equal(got, expected), (got, expected)
