"""InternVL against HF's own model: InternViT's layer scales in the sublayer outputs, the projector's input the
pixel-shuffled tower output (HF's own ``pixel_shuffle``), a patch at ``vision_projector.hook_out`` vs the image
features edited by hand, and text with images tiled by InternVL's own processor."""

import copy

import numpy as np
import torch
from PIL import Image

import bridge
from bridge.analysis.residual import block_layout
from bridge.testing import examples_of, expect_close
from bridge_vision.testing import internvl_processor, internvl_tokenizer


def inputs_for(pair, batch=2, seed=0):
    return dict(examples_of(type(pair.bridge.adapter)).example_input(pair.bridge.hf_model.config, batch, seed).inputs)


def test_layer_scales_are_in_the_sublayer_outputs(vlm_pair):
    pair = vlm_pair("internvl")
    inputs = inputs_for(pair)
    _, cache = pair.bridge.run_with_cache(inputs, names_filter=lambda n: n.startswith("vision_encoder.blocks.1"))
    layer = pair.reference.model.vision_tower.encoder.layer[1]
    with torch.no_grad():
        attention = layer.attention(layer.layernorm_before(cache["vision_encoder.blocks.1.hook_resid_pre"]))[0]
        mlp = layer.mlp(layer.layernorm_after(cache["vision_encoder.blocks.1.hook_resid_mid"]))
    expect_close(cache["vision_encoder.blocks.1.hook_attn_out"], layer.lambda_1 * attention, "lambda_1 · attention")
    expect_close(cache["vision_encoder.blocks.1.hook_mlp_out"], layer.lambda_2 * mlp, "lambda_2 · MLP")
    layout = block_layout(pair.bridge.vision_encoder.blocks[1], 1)
    assert not layout.heads_write and "lambda_1" in layout.why_not["attn"]


def test_projector_reads_the_pixel_shuffled_tower_output(vlm_pair):
    pair = vlm_pair("internvl")
    inputs = inputs_for(pair)
    _, cache = pair.bridge.run_with_cache(inputs)
    model = pair.reference.model
    with torch.no_grad():
        tower = model.vision_tower(pixel_values=inputs["pixel_values"]).last_hidden_state[:, 1:]  # CLS dropped
        shuffled = model.pixel_shuffle(tower.reshape(2, 4, 4, -1), scale_factor=0.5).reshape(2, 4, -1)
    expect_close(cache["vision_projector.hook_in"], shuffled, "hook_in vs HF's pixel shuffle of the tower output")
    expect_close(cache["vision_projector.hook_out"], model.multi_modal_projector(shuffled), "hook_out")
    last = cache[f"vision_encoder.blocks.{pair.bridge.vision_encoder.cfg.n_layers - 1}.hook_resid_post"]
    expect_close(last[:, 1:], tower, "no final norm with mean pooling: the last block's output is read")


def test_patch_at_hook_out_equals_editing_the_image_features_by_hand(vlm_pair):
    pair = vlm_pair("internvl")
    inputs = inputs_for(pair)
    with torch.no_grad():
        features = pair.reference.model.get_image_features(inputs["pixel_values"], return_dict=True)
    delta = torch.randn(features.pooler_output.shape, generator=torch.Generator().manual_seed(3))
    got = pair.bridge.run_with_hooks(inputs, fwd_hooks=[("vision_projector.hook_out", lambda t, hook: t + delta)])
    edited = copy.copy(features)
    edited.pooler_output = features.pooler_output + delta
    rest = {k: v for k, v in inputs.items() if k != "pixel_values"}
    expect_close(got, pair.reference(**rest, mm_encoder_outputs={"image": edited}).logits, "hook_out patch")


def test_text_and_images_through_internvls_processor(vlm_pair):
    pair = vlm_pair("internvl")
    processor = internvl_processor(pair.bridge.hf_model.config)
    model = bridge.wrap(copy.deepcopy(pair.reference), internvl_tokenizer(), processor=processor)
    rng = np.random.default_rng(1)
    pictures = [Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)) for size in [(16, 32, 3), (16, 16, 3)]]
    texts = ["a <IMG_CONTEXT> cat", "<IMG_CONTEXT> dog"]
    encoded = processor(text=texts, images=pictures, return_tensors="pt", padding=True)
    expected = pair.reference(**encoded).logits
    real = encoded["attention_mask"].bool()
    logits, cache = model.run_with_cache(texts, pixel_values=pictures)
    expect_close(logits[real], expected[real], "text + images through InternVL's processor vs HF")
    tiles = encoded["pixel_values"].shape[0]
    assert cache["vision_projector.hook_out"].shape == (tiles, 4, model.cfg.d_model)
    assert len(model.image_token_positions(dict(encoded))) == tiles
