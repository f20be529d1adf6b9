"""Idefics3 and SmolVLM against HF's own model: the pixel-shuffle connector's hooks (each 2 x 2 block of patches
concatenated, by hand), a patch at ``vision_projector.hook_out`` vs the image features edited by hand, the
position lookup of each tile, where each tile's tokens sit, and text with images split into tiles by the model's
own processor."""

import copy

import einops
import numpy as np
import pytest
import torch
from PIL import Image

import bridge
from bridge.testing import examples_of, expect_close
from bridge_vision.testing import example_image_processor, idefics3_processor, vlm_tokenizer
from bridge_vision.vlm_examples import IMAGE_TOKEN_ID

CASES = ("idefics3", "smolvlm")


@pytest.fixture(params=CASES)
def idefics(request):
    return request.param


def inputs_for(pair, batch=2, seed=0):
    return dict(examples_of(type(pair.bridge.adapter)).example_input(pair.bridge.hf_model.config, batch, seed).inputs)


def test_pixel_shuffle_connector_hooks(vlm_pair, idefics):
    """``hook_in`` is the tower's output after ``ln_post``; ``hook_pixel_shuffle`` concatenates each 2 x 2 block of
    the 4 x 4 patch grid (by hand); ``hook_out`` is its projection, HF's image features."""
    pair = vlm_pair(idefics)
    inputs = inputs_for(pair)
    _, cache = pair.bridge.run_with_cache(inputs)
    tower = pair.reference.model.vision_model
    with torch.no_grad():
        hidden = tower(inputs["pixel_values"].flatten(0, 1)).last_hidden_state  # [n_tiles, 16, d_vision]
    expect_close(cache["vision_projector.hook_in"], hidden, "hook_in vs HF's tower output")
    # HF's pixel shuffle: each 2 x 2 block of patches concatenated, row by row: [top-left, top-right, bottom-left, …]
    by_hand = einops.rearrange(hidden, "n (h sh w sw) d -> n (h w) (sh sw d)", h=2, sh=2, w=2, sw=2)
    expect_close(cache["vision_projector.hook_pixel_shuffle"], by_hand, "pixel shuffle by hand")
    projected = by_hand @ pair.reference.model.connector.modality_projection.proj.weight.T
    expect_close(cache["vision_projector.hook_out"], projected, "hook_out vs the projection of the shuffle")
    expect_close(cache["blocks.0.hook_resid_pre"][inputs["input_ids"] == IMAGE_TOKEN_ID], projected.flatten(0, 1), "x")


def test_patch_at_hook_out_equals_editing_the_image_features_by_hand(vlm_pair, idefics):
    pair = vlm_pair(idefics)
    inputs = inputs_for(pair)
    with torch.no_grad():
        features = pair.reference.model.get_image_features(inputs["pixel_values"], return_dict=True)
    rows = torch.cat(features.pooler_output)
    delta = torch.randn(rows.shape, generator=torch.Generator().manual_seed(3))
    got = pair.bridge.run_with_hooks(
        inputs, fwd_hooks=[("vision_projector.hook_out", lambda t, hook: t + delta.view(t.shape))]
    )
    edited = copy.copy(features)
    edited.pooler_output = list(torch.split(rows + delta, [len(f) for f in features.pooler_output]))
    rest = {k: v for k, v in inputs.items() if k != "pixel_values"}
    expected = pair.reference(**rest, mm_encoder_outputs={"image": edited}).logits
    expect_close(got, expected, f"{idefics}: hook_out + delta vs the image features + delta by hand")
    assert (expected - pair.reference(**inputs).logits).abs().max() > 1e-2


def test_position_lookup_and_patch_embedding(vlm_pair, idefics):
    pair = vlm_pair(idefics)
    inputs = inputs_for(pair)
    _, cache = pair.bridge.run_with_cache(inputs, names_filter=lambda n: n.startswith("vision_encoder.hook"))
    embeddings = pair.reference.model.vision_model.embeddings
    table = embeddings.position_embedding.weight.detach()  # full 4 x 4 grids: positions 0 … 15 in order
    expect_close(cache["vision_encoder.hook_pos_embed"], table.expand(2, -1, -1), "positions of a full tile")
    with torch.no_grad():
        conv = embeddings.patch_embedding(inputs["pixel_values"].flatten(0, 1))
    expect_close(cache["vision_encoder.hook_patch_embed"], conv.flatten(2).transpose(1, 2), "patch embedding")


def test_text_and_images_through_the_models_own_processor(vlm_pair, idefics):
    if idefics == "smolvlm":
        pytest.importorskip("num2words", reason="SmolVLM's processor needs num2words (not installed here)")
    pair = vlm_pair(idefics)
    config = pair.bridge.hf_model.config
    tokenizer = vlm_tokenizer()
    processor = idefics3_processor(config, tokenizer, example_image_processor(config))
    model = bridge.wrap(copy.deepcopy(pair.reference), tokenizer, processor=processor)
    rng = np.random.default_rng(1)
    pictures = [[Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8))] for size in [(24, 32, 3), (16, 16, 3)]]
    texts = ["a <image> cat", "<image> dog"]
    encoded = processor(text=texts, images=pictures, return_tensors="pt", padding=True)
    assert encoded["pixel_values"].shape[1] == 5  # the first image: 2 x 2 tiles and the whole image
    expected = pair.reference(**encoded).logits
    real = encoded["attention_mask"].bool()
    logits, cache = model.run_with_cache(texts, pixel_values=pictures)
    expect_close(logits[real], expected[real], f"{idefics}: text + images through the processor vs HF")
    tiles = (encoded["pixel_values"] != 0).flatten(2).any(-1).sum(-1).tolist()  # real (not padding) tiles per text
    where = model.image_token_positions(dict(encoded))
    assert [(img.batch, len(img.positions)) for img in where] == [(0, 4)] * tiles[0] + [(1, 4)] * tiles[1]
    assert cache["vision_projector.hook_out"].shape == (sum(tiles), 4, model.cfg.d_model)
