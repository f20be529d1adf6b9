"""Image models off the happy path: weight processing of image encoders (done, outputs unchanged) and of two-tower
models (refused, saying why); the default return type (the model's natural output); uint8 image tensors; empty
pixel batches.

References: the same model's outputs before processing, and the HF model called on the image processor's output."""

import numpy as np
import pytest
import torch

import bridge
from bridge.analysis.processing import WeightProcessingError
from bridge.kernel.errors import BadInputError
from bridge.testing import examples_of
from bridge_vision import ADAPTERS

ARCHITECTURES = {arch: adapter for adapter in ADAPTERS for arch in adapter.architectures}
ENCODERS = ["CLIPVisionModel", "CLIPVisionModelWithProjection", "SiglipVisionModel", "Siglip2VisionModel"]
CLASSIFIERS = ["CLIPForImageClassification", "SiglipForImageClassification"]
TWO_TOWERS = ["CLIPModel", "SiglipModel"]


def example(model, architecture):
    return dict(examples_of(ARCHITECTURES[architecture]).example_input(model.hf_model.config, batch=2, seed=3).inputs)


def outputs(model, inputs):
    """Every output; logits as log-probabilities (``center_unembed`` shifts each row of logits by a constant)."""
    with torch.no_grad():
        out = {kind: model(inputs, return_type=kind) for kind in model.adapter.output_fields}
    return {kind: value.log_softmax(-1) if kind == "logits" else value for kind, value in out.items()}


# ------------------------------------------------------------------ item 16: weight processing


@pytest.mark.parametrize("architecture", ENCODERS + CLASSIFIERS)
def test_processing_an_image_encoder_keeps_its_outputs(model_dirs, architecture):
    model = bridge.load(model_dirs[architecture])
    inputs = example(model, architecture)
    before = outputs(model, inputs)
    model.process_weights()
    assert "fold_ln" in model.cfg.extra["weight_processing"]
    after = outputs(model, inputs)
    for kind, value in before.items():
        torch.testing.assert_close(after[kind], value, atol=2e-5, rtol=0, msg=kind)  # fp32, |values| ~ 3
    ln1 = model.blocks[0].ln1.hf
    assert torch.equal(ln1.weight, torch.ones_like(ln1.weight)) and not ln1.bias.any()


@pytest.mark.parametrize("architecture", ENCODERS[:1])
def test_load_with_fold_ln_on_an_image_encoder(model_dirs, architecture):
    model = bridge.load(model_dirs[architecture], fold_ln=True)
    assert model.cfg.extra["weight_processing"][0] == "fold_ln"


@pytest.mark.parametrize("architecture", TWO_TOWERS)
def test_processing_a_two_tower_model_is_refused_with_the_reason(model_dirs, architecture):
    model = bridge.load(model_dirs[architecture])
    snapshot = {n: p.detach().clone() for n, p in model.hf_model.named_parameters()}
    with pytest.raises(WeightProcessingError, match=r"towers \(vision, text\).*load one tower"):
        model.process_weights()
    with pytest.raises(WeightProcessingError, match="towers"):
        bridge.load(model_dirs[architecture], fold_ln=True)
    assert all(torch.equal(p, snapshot[n]) for n, p in model.hf_model.named_parameters())
    assert "weight_processing" not in model.cfg.extra


# ------------------------------------------------------------------ item 20: calling conventions


@pytest.mark.parametrize(
    ("architecture", "natural"),
    [("CLIPVisionModel", "hidden"), ("CLIPVisionModelWithProjection", "hidden"), ("SiglipVisionModel", "hidden"),
     ("CLIPForImageClassification", "logits"), ("CLIPModel", "logits")],
)  # fmt: skip
def test_the_default_return_type_is_the_natural_output(model_dirs, architecture, natural):
    model = bridge.load(model_dirs[architecture])
    inputs = example(model, architecture)
    with torch.no_grad():
        expected = model(inputs, return_type=natural)
        out, cache = model.run_with_cache(inputs)
        default = model(inputs)
    torch.testing.assert_close(default, expected, atol=0, rtol=0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)  # every hook cached: the eager attention path
    assert len(cache) > 0
    if "logits" not in model.adapter.output_fields:
        with pytest.raises(BadInputError, match=r"return_type='logits' is not one of"):
            model(inputs, return_type="logits")  # asked for explicitly: still refused


def test_uint8_images_go_through_the_image_processor(model_dirs):
    model = bridge.load(model_dirs["CLIPVisionModel"])
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (2, 3, 20, 20), dtype=np.uint8)  # [b, c, h, w]
    expected = model(model.image_processor(images=list(pictures), return_tensors="pt")["pixel_values"])
    torch.testing.assert_close(model(torch.from_numpy(pictures)), expected, atol=0, rtol=0)
    torch.testing.assert_close(model(pixel_values=torch.from_numpy(pictures[0])), expected[:1], atol=1e-6, rtol=0)
    bare = bridge.wrap(type(model.hf_model).from_pretrained(model_dirs["CLIPVisionModel"]), image_processor=None)
    with pytest.raises(BadInputError, match=r"uint8.*0\.\.255.*image processor.*float"):
        bare(torch.from_numpy(pictures))


@pytest.mark.parametrize("architecture", ["CLIPVisionModel", "CLIPModel"])
def test_an_empty_pixel_batch_is_refused(model_dirs, architecture):
    model = bridge.load(model_dirs[architecture])
    inputs = example(model, architecture)
    empty = inputs["pixel_values"][:0]
    with pytest.raises(BadInputError, match=r"pixel values hold no image.*\(0, 3"):
        if "input_ids" in inputs:
            model(inputs["input_ids"], pixel_values=empty)
        else:
            model(empty)
