"""Inputs and return types of image models, against the HF model called on the same inputs: pixel values
as the input or ``pixel_values=``, images through the image processor ``bridge.load`` loaded, the processor's
output as a dict (SigLIP 2), text + images for two-tower models; and the errors for the wrong modality."""

import numpy as np
import pytest
import torch
from PIL import Image

import bridge
from bridge.kernel.errors import BadInputError
from bridge.testing import examples_of
from bridge_vision import (
    CLIPAdapter,
    CLIPClassifierAdapter,
    CLIPVisionAdapter,
    Siglip2VisionAdapter,
    SiglipAdapter,
    SiglipVisionAdapter,
)

TOL = dict(atol=1e-5, rtol=0)


def images(n, size=20, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def loaded(model_dirs, architecture):
    model = bridge.load(model_dirs[architecture])
    reference = type(model.hf_model).from_pretrained(model_dirs[architecture], attn_implementation="eager").eval()
    return model, reference


def test_pixel_values_as_input_or_keyword_and_every_return_type(model_dirs):
    model, reference = loaded(model_dirs, "CLIPVisionModel")
    pixels = examples_of(CLIPVisionAdapter).example_input(model.hf_model.config, batch=3, seed=4).inputs["pixel_values"]
    expected = reference(pixels)
    torch.testing.assert_close(model(pixels, return_type="hidden"), expected.last_hidden_state, **TOL)
    torch.testing.assert_close(model(pixel_values=pixels, return_type="pooled"), expected.pooler_output, **TOL)
    assert model(pixels, return_type=None) is None
    torch.testing.assert_close(model(pixels), expected.last_hidden_state, **TOL)  # the default: the natural output
    with pytest.raises(BadInputError, match=r"return_type='logits' is not one of \['hidden', 'pooled', None\]"):
        model(pixels, return_type="logits")


def test_projection_model_returns_image_embeds(model_dirs):
    model, reference = loaded(model_dirs, "CLIPVisionModelWithProjection")
    pixels = examples_of(CLIPVisionAdapter).example_input(model.hf_model.config).inputs["pixel_values"]
    out, cache = model.run_with_cache(pixels, return_type="embeds")
    torch.testing.assert_close(out, reference(pixels).image_embeds, **TOL)
    torch.testing.assert_close(cache["hook_image_embeds"], out, atol=0, rtol=0)


@pytest.mark.parametrize("architecture", ["CLIPVisionModel", "SiglipVisionModel", "CLIPForImageClassification"])
def test_images_go_through_the_loaded_image_processor(model_dirs, architecture):
    model, reference = loaded(model_dirs, architecture)
    assert model.image_processor is not None
    pictures = images(2)
    pixels = model.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
    return_type = "logits" if architecture.endswith("Classification") else "hidden"
    field = "logits" if return_type == "logits" else "last_hidden_state"
    expected = getattr(reference(pixels), field)
    torch.testing.assert_close(model(pictures, return_type=return_type), expected, **TOL)
    torch.testing.assert_close(model(pictures[0], return_type=return_type), expected[:1], **TOL)
    torch.testing.assert_close(model(pixel_values=pictures, return_type=return_type), expected, **TOL)


def test_siglip2_takes_the_processor_output_as_a_dict(model_dirs):
    model, reference = loaded(model_dirs, "Siglip2VisionModel")
    inputs = model.image_processor(images=[*images(1, 16), *images(1, 8, seed=1)], return_tensors="pt")
    assert set(inputs) == {"pixel_values", "pixel_attention_mask", "spatial_shapes"}
    expected = reference(**inputs)
    out, cache = model.run_with_cache(dict(inputs), return_type="pooled")
    torch.testing.assert_close(cache["hook_pooled"], out, atol=0, rtol=0)
    torch.testing.assert_close(out, expected.pooler_output, **TOL)
    torch.testing.assert_close(model(inputs, return_type="hidden"), expected.last_hidden_state, **TOL)
    with pytest.raises(BadInputError, match="SigLIP 2"):
        model(inputs["pixel_values"], return_type="hidden")


def test_two_tower_reads_text_and_images_together(model_dirs):
    model, reference = loaded(model_dirs, "CLIPModel")
    example = examples_of(CLIPAdapter).example_input(model.hf_model.config)
    tokens, pixels = example.inputs["input_ids"], example.inputs["pixel_values"]
    expected = reference(input_ids=tokens, pixel_values=pixels)
    torch.testing.assert_close(model(tokens, pixel_values=pixels), expected.logits_per_image, **TOL)
    image_embeds, text_embeds = model(tokens, pixel_values=pixels, return_type="embeds")
    torch.testing.assert_close(image_embeds, expected.image_embeds, **TOL)
    torch.testing.assert_close(text_embeds, expected.text_embeds, **TOL)
    texts = ["The cat sat on the mat.", "Hello world!"]
    batch = model.tokenizer(texts, padding=True, return_tensors="pt")
    expected = reference(**batch, pixel_values=pixels).logits_per_image
    torch.testing.assert_close(model(texts, pixel_values=pixels, prepend_bos=False), expected, **TOL)


def test_wrong_modality_errors(model_dirs):
    vision, _ = loaded(model_dirs, "CLIPVisionModel")
    with pytest.raises(BadInputError, match="reads images, not text"):
        vision("a photo of a cat", return_type="hidden")
    with pytest.raises(BadInputError, match="reads images, not text"):
        vision(torch.tensor([[1, 2, 3]]), return_type="hidden")
    with pytest.raises(BadInputError, match="pixel values must be a float tensor"):
        vision(pixel_values=torch.zeros(1, 3, 16, 16, dtype=torch.long), return_type="hidden")
    with pytest.raises(BadInputError, match="start_at_layer"):
        vision(torch.zeros(1, 3, 16, 16), start_at_layer=1, return_type="hidden")
    vision.image_processor = None
    with pytest.raises(BadInputError, match="no image processor was loaded"):
        vision(images(1), return_type="hidden")
    two_tower, _ = loaded(model_dirs, "CLIPModel")
    with pytest.raises(BadInputError, match="reads text and images together: pass the text"):
        two_tower(torch.zeros(1, 3, 16, 16))
    with pytest.raises(BadInputError, match="reads text and images together"):
        two_tower("a photo of a cat")
    with pytest.raises(BadInputError, match="takes no input named"):
        two_tower({"input_ids": torch.tensor([[1, 2]]), "pixel_value": torch.zeros(1, 3, 16, 16)})


def test_images_on_a_text_model_error(tmp_path):
    pytest.importorskip("bridge_gpt2")
    from bridge.testing import save_tiny_model
    from bridge_gpt2 import GPT2Adapter

    model = bridge.load(save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path))
    with pytest.raises(BadInputError, match="reads text only"):
        model("hello", pixel_values=torch.zeros(1, 3, 16, 16))
    with pytest.raises(BadInputError, match="reads text only"):
        model(images(1))


def test_stop_at_layer_returns_the_residual_entering_that_block(model_dirs):
    model, reference = loaded(model_dirs, "SiglipVisionModel")
    pixels = examples_of(SiglipVisionAdapter).example_input(model.hf_model.config).inputs["pixel_values"]
    hidden = reference(pixels, output_hidden_states=True).hidden_states
    torch.testing.assert_close(model(pixels, stop_at_layer=1, return_type="hidden"), hidden[1], **TOL)


def test_classifier_logits_read_the_mean_over_patches(model_dirs):
    model, reference = loaded(model_dirs, "CLIPForImageClassification")
    pixels = examples_of(CLIPClassifierAdapter).example_input(model.hf_model.config).inputs["pixel_values"]
    logits, cache = model.run_with_cache(pixels, return_type="logits")
    last = reference(pixels, output_hidden_states=True).hidden_states[-1]  # [b, 1 + patches, d]
    torch.testing.assert_close(cache["hook_pooled"], last[:, 1:].mean(1), **TOL)
    torch.testing.assert_close(cache["hook_pooled"] @ model.W_U + model.b_U, logits, **TOL)


def test_two_tower_siglip_logits_equal_hf(model_dirs):
    model, reference = loaded(model_dirs, "SiglipModel")
    example = examples_of(SiglipAdapter).example_input(model.hf_model.config, batch=3, seed=2)
    logits = model(example.inputs)
    torch.testing.assert_close(logits, reference(**example.inputs).logits_per_image, **TOL)
    assert logits.shape == (3, 4)


def test_siglip2_padding_slots_do_not_change_real_patches(model_dirs):
    """An image alone and the same image padded with empty slots next to a larger one give the same
    hidden states on its real patches (the pixel attention mask reaches the hooked attention path)."""
    model, _ = loaded(model_dirs, "Siglip2VisionModel")
    example = examples_of(Siglip2VisionAdapter).example_input(model.hf_model.config, batch=2, seed=3).inputs
    alone = {k: v[1:] for k, v in example.items()}
    alone = {
        **alone,
        "pixel_values": alone["pixel_values"][:, :8],
        "pixel_attention_mask": alone["pixel_attention_mask"][:, :8],
    }
    names = lambda n: n.endswith(("hook_resid_post", "hook_pattern"))  # noqa: E731
    _, batched = model.run_with_cache(example, names_filter=names, return_type=None)
    _, single = model.run_with_cache(alone, names_filter=names, return_type=None)
    torch.testing.assert_close(batched["blocks.1.hook_resid_post"][1, :8], single["blocks.1.hook_resid_post"][0], **TOL)
    torch.testing.assert_close(batched["pattern", 0][1, :, :8, :8], single["pattern", 0][0], **TOL)


def test_wrap_picks_the_projection_adapter_by_the_model_class():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from bridge_vision import CLIPVisionProjectionAdapter

    config = CLIPVisionConfig(
        **{
            k: v
            for k, v in examples_of(CLIPVisionAdapter).example_config().to_dict().items()
            if k
            in (
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "image_size",
                "patch_size",
                "projection_dim",
            )
        }
    )
    assert not config.architectures
    model = bridge.wrap(CLIPVisionModelWithProjection(config).eval())
    assert type(model.adapter) is CLIPVisionProjectionAdapter
    pixels = examples_of(CLIPVisionAdapter).example_input(config).inputs["pixel_values"]
    out, cache = model.run_with_cache(pixels, return_type="embeds", names_filter=["hook_image_embeds"])
    torch.testing.assert_close(cache["hook_image_embeds"], out, atol=0, rtol=0)


def test_inspect_lists_the_hooks_of_an_image_model_with_their_shapes(model_dirs, capsys):
    from bridge.app.cli import main

    assert main(["inspect", str(model_dirs["SiglipVisionModel"])]) == 0
    out = capsys.readouterr().out
    assert "dry run on one example input" in out
    assert "hook_patch_embed                         1x16x32" in out
    assert "blocks.1.attn.hook_pattern               1x4x16x16" in out
