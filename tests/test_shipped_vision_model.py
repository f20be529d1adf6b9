"""The shipped shape classifier (examples/models/shapes-vit) and the vision demo, checked together.

References are independent of the bridge: the HF model's own logits and ``output_attentions``, and blanking
pixels in the image itself. Thresholds have margin over what the model measures on these fixed sets
(accuracy 1.0 on the 400 images; last-layer attention on the shape against 0.21 uniform: pooled 0.54-0.90 per
head, 0.78 on average, CLS 0.81 on average; mean-ablating the shape's patches drops the true-class logit by 21.3
and makes 96% of the images read 'none', as many background patches move it by 0.01).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("bridge_vision", reason="the vision demo needs the bridge-vision plugin (CLIP classifiers)")

import bridge
from bridge.testing import examples_of
from bridge_vision.demo import (
    class_logits,
    mean_patch_embedding,
    model_input,
    patch_attention,
    patch_grid,
    replace_patches,
    shape_patches,
    share_on,
    true_class_logit,
)
from bridge_vision.shapes import CLASSES, NO_SHAPE, SHAPES, draw_shapes, normalize

MODEL = Path(__file__).parents[1] / "examples" / "models" / "shapes-vit"
SEED = 777  # neither the training seed (0) nor the model card's evaluation seed (12345)


@pytest.fixture(scope="module")
def model():
    return bridge.load(MODEL)


@pytest.fixture(scope="module")
def hf_model():
    from transformers import CLIPForImageClassification

    return CLIPForImageClassification.from_pretrained(MODEL, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def images():
    return draw_shapes(400, torch.Generator().manual_seed(SEED), size=48, include_empty=True)


def test_labels_and_image_processor_match_the_training_data(model, images):
    assert [model.hf_model.config.id2label[i] for i in range(len(CLASSES))] == list(CLASSES)
    pixels = model.image_processor(list(images.images[:8].permute(0, 2, 3, 1).numpy()), return_tensors="pt")
    torch.testing.assert_close(pixels.pixel_values, normalize(images.images[:8]), rtol=0, atol=1e-6)


def test_accuracy_on_fresh_images_through_the_bridge_and_the_hf_model(model, hf_model, images):
    with torch.no_grad():
        logits = model(model_input(model, images))
        reference = hf_model(pixel_values=normalize(images.images)).logits
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
    accuracy = (reference.argmax(dim=1) == images.labels).float().mean().item()
    assert accuracy >= 0.97
    for label, name in enumerate(CLASSES):
        chosen = images.labels == label
        assert chosen.sum() > 50 and (logits[chosen].argmax(dim=1) == label).float().mean() >= 0.93, name


def test_attention_concentrates_on_the_shapes_patches(model, hf_model, images):
    batch = draw_shapes(100, torch.Generator().manual_seed(SEED + 1), size=48)
    grid = patch_grid(model)
    _, cache = model.run_with_cache(model_input(model, batch), names_filter=lambda n: n.endswith("hook_pattern"))
    with torch.no_grad():
        reference = hf_model(pixel_values=normalize(batch.images), output_attentions=True).attentions
    for layer in range(model.cfg.n_layers):
        torch.testing.assert_close(cache["pattern", layer], reference[layer], rtol=1e-5, atol=1e-6)
    on_shape = shape_patches(batch, grid)
    uniform = on_shape.float().mean().item()
    last = model.cfg.n_layers - 1
    pooled = share_on(patch_attention(cache["pattern", last], grid, "pooled"), on_shape).mean(dim=0)  # [head]
    cls = share_on(patch_attention(cache["pattern", last], grid, "cls"), on_shape).mean(dim=0)  # [head]
    assert uniform < 0.3
    assert pooled.mean() > 3 * uniform and (pooled > 2 * uniform).all(), (pooled, uniform)
    assert cls.mean() > 2.5 * uniform, (cls, uniform)


def test_ablating_the_shapes_patches_removes_the_evidence_and_background_does_not(model, hf_model):
    batch = draw_shapes(100, torch.Generator().manual_seed(SEED + 2), size=48)
    grid = patch_grid(model)
    on_shape = shape_patches(batch, grid)
    # As many background patches as the shape covers, at random.
    scores = torch.rand(on_shape.shape, generator=torch.Generator().manual_seed(SEED + 3)).masked_fill(on_shape, -1)
    background = scores.argsort(dim=1, descending=True).argsort(dim=1) < on_shape.sum(dim=1, keepdim=True)
    assert not (background & on_shape).any()
    inputs, labels = model_input(model, batch), batch.labels
    mean_embed = mean_patch_embedding(model, SEED + 4)
    base = true_class_logit(model, inputs, labels)
    shape_logits = class_logits(model, inputs, [("hook_patch_embed", replace_patches(on_shape, mean_embed))])
    shape_ablated = shape_logits.gather(1, labels[:, None])[:, 0]
    background_ablated = true_class_logit(
        model, inputs, labels, [("hook_patch_embed", replace_patches(background, mean_embed))]
    )
    drop_shape, drop_background = (base - shape_ablated).mean().item(), (base - background_ablated).mean().item()
    assert drop_shape > 5.0
    assert abs(drop_background) < 1.0
    assert drop_shape > 10 * abs(drop_background)
    assert (shape_logits.argmax(dim=1) == CLASSES.index(NO_SHAPE)).float().mean() > 0.8  # nothing left to see

    # Independently of the hooks: paint those patches with flat background-mean pixels in the image itself.
    pixel_mask = on_shape.reshape(-1, grid.side, grid.side).repeat_interleave(8, 1).repeat_interleave(8, 2)
    pixels = normalize(batch.images)
    painted = torch.where(pixel_mask[:, None], torch.full_like(pixels, (57.5 / 255 - 0.5) / 0.5), pixels)
    with torch.no_grad():
        clean = hf_model(pixel_values=pixels).logits.gather(1, labels[:, None])
        blank = hf_model(pixel_values=painted).logits.gather(1, labels[:, None])
    assert (clean - blank).mean() > 5.0


def test_demo_command_reports_a_passing_check_and_writes_the_overlay(tmp_path):
    png = tmp_path / "vision.png"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "bridge"), "demo", "--model", str(MODEL), "--png", str(png)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "via CLIPClassifierAdapter" in out
    for name in SHAPES:
        assert f"  {name:<10} {name:<11}" in out  # drawn == predicted, one line per shape
    assert out.count("[PASS]") == 3 and "[FAIL]" not in out, out
    assert "hook_patch_embed" in out and "hook_z" in out and "hook_pattern" in out
    assert png.exists() and png.stat().st_size > 5000


def test_demo_draws_to_a_default_png_per_model_kind(tmp_path, monkeypatch):
    from bridge.app.demo import run_demo

    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    result = run_demo(MODEL, out=lines.append, default_png=True)
    assert result["checks_passed"] and result["predicted"] == list(SHAPES)
    assert (tmp_path / "examples" / "output" / "vision_attention.png").exists()
    text = run_demo(MODEL.parent / "induction-2l", out=lines.append, default_png=True)
    assert text["induction_head"][0] == 1
    assert (tmp_path / "examples" / "output" / "induction_head.png").exists()
    assert run_demo(MODEL, out=lines.append)["png"] is None  # no png unless asked for


def test_demo_refuses_a_classifier_of_other_classes_with_a_clear_error():
    from transformers import CLIPForImageClassification

    from bridge.kernel.errors import BridgeError
    from bridge_vision.adapters import CLIPClassifierAdapter
    from bridge_vision.demo import NotAShapesModelError, run_vision_demo

    other = bridge.wrap(CLIPForImageClassification(examples_of(CLIPClassifierAdapter).example_config()).eval())
    with pytest.raises(NotAShapesModelError, match="this model's classes are LABEL_0") as error:
        run_vision_demo(other, out=lambda line: None)
    assert isinstance(error.value, BridgeError) and "train_vision.py" in str(error.value)


VIT_MODEL = MODEL.parent / "shapes-hf-vit"


def test_the_vit_classifier_runs_the_demo_from_the_cls_query():
    """The shipped ``ViTForImageClassification`` (``train_vision.py --arch vit``): the bridge's logits equal HF's,
    and the demo reads the attention of the query the classifier reads (CLS) and passes its checks."""
    from transformers import ViTForImageClassification

    from bridge_vision.demo import run_vision_demo

    model = bridge.load(VIT_MODEL)
    hf_model = ViTForImageClassification.from_pretrained(VIT_MODEL, attn_implementation="eager").eval()
    batch = draw_shapes(64, torch.Generator().manual_seed(SEED), size=48, include_empty=True)
    with torch.no_grad():
        reference = hf_model(pixel_values=normalize(batch.images)).logits
    torch.testing.assert_close(model(model_input(model, batch)), reference, rtol=1e-4, atol=1e-4)
    assert (reference.argmax(dim=1) == batch.labels).float().mean() >= 0.9
    lines: list[str] = []
    result = run_vision_demo(model, out=lines.append)
    assert result["checks_passed"], "\n".join(lines)
    assert "The classifier reads CLS after the final norm." in lines[0]
