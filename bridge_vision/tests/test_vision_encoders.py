"""ViT and DINOv2 (with and without registers), and ``interpolate_pos_encoding`` on every tower whose HF model
takes it, each against an independent computation: the HF model's own outputs and its embeddings module's own
``interpolate_pos_encoding``, torch hooks on the HF reference's modules, the patch convolution by hand."""

import copy

import einops
import numpy as np
import pytest
import torch
from PIL import Image

import bridge
from bridge.analysis.residual import block_layout
from bridge.testing import ConformanceError, check_residual_algebra, examples_of, make_pair
from bridge_vision import Dinov2Adapter, ViTAdapter
from bridge_vision.components import LayerScaleBlock

TOL = dict(atol=1e-5, rtol=0)


def loaded(model_dirs, architecture):
    model = bridge.load(model_dirs[architecture])
    reference = copy.deepcopy(bridge.unwrap(bridge.load(model_dirs[architecture]).hf_model))
    reference.set_attn_implementation("eager")
    return model, reference


def pixels(config, batch=2, size=None, seed=0):
    vision = getattr(config, "vision_config", None) or config
    size = size or vision.image_size
    return torch.randn(batch, vision.num_channels, size, size, generator=torch.Generator().manual_seed(seed))


def embeddings_of(reference):
    vision = getattr(reference, "vision_model", None) or getattr(reference, "vit", None) or reference
    return vision.embeddings


#: Every tower whose HF forward takes ``interpolate_pos_encoding`` (DINOv2 always interpolates), with its
#: ``return_type`` and the HF output field it returns.
INTERPOLATING = [
    ("CLIPVisionModel", "pooled", "pooler_output"),
    ("SiglipVisionModel", "pooled", "pooler_output"),
    ("SiglipForImageClassification", "logits", "logits"),
    ("ViTModel", "pooled", "pooler_output"),
    ("ViTForImageClassification", "logits", "logits"),
    ("Dinov2Model", "hidden", "last_hidden_state"),
    ("Dinov2WithRegistersModel", "hidden", "last_hidden_state"),
]


@pytest.mark.parametrize(("architecture", "return_type", "field"), INTERPOLATING, ids=[c[0] for c in INTERPOLATING])
def test_interpolated_positions_at_another_resolution(model_dirs, architecture, return_type, field):
    """At 24 x 24 pixels (a 6 x 6 grid where the table has 4 x 4): the output equals HF's with
    ``interpolate_pos_encoding=True``, ``hook_pos_embed`` equals what HF's own ``interpolate_pos_encoding`` gives,
    and a patch there equals the same edit made on the HF embeddings module's output."""
    model, reference = loaded(model_dirs, architecture)
    config = model.hf_model.config
    images = pixels(config, size=24)
    dinov2 = architecture.startswith("Dinov2")
    flag = {} if dinov2 else {"interpolate_pos_encoding": True}
    out, cache = model.run_with_cache(images, return_type=return_type, **flag)
    expected = getattr(reference(images, **flag), field)
    torch.testing.assert_close(out, expected, **TOL)
    embeddings = embeddings_of(reference)
    grid = 36 + int(not architecture.startswith("Siglip"))  # positions the table is resized to (CLS included)
    with torch.no_grad():
        width = model.cfg.d_model
        table = embeddings.interpolate_pos_encoding(torch.zeros(1, grid, width), 24, 24)  # [1, p, d]
    positions = cache["hook_pos_embed"]
    registers = model.cfg.extra.get("register_positions", range(0))
    if len(registers):  # registers have no position: zero rows between CLS and the patches
        assert positions[:, registers].abs().max() == 0
        positions = torch.cat([positions[:, :1], positions[:, registers.stop :]], dim=1)
    torch.testing.assert_close(positions, einops.repeat(table[0], "p d -> b p d", b=2), atol=0, rtol=0)
    assert cache["blocks.0.hook_resid_pre"].shape[1] == grid + len(registers)

    delta = torch.randn(cache["hook_pos_embed"].shape, generator=torch.Generator().manual_seed(4))
    got = model.run_with_hooks(
        images, fwd_hooks=[("hook_pos_embed", lambda t, hook: t + delta)], return_type=return_type, **flag
    )
    handle = embeddings.register_forward_hook(lambda _m, _a, out: out + delta)
    try:
        edited = getattr(reference(images, **flag), field)
    finally:
        handle.remove()
    torch.testing.assert_close(got, edited, **TOL)
    assert (edited - expected).abs().max() > 1e-3


@pytest.mark.parametrize("architecture", ["CLIPVisionModel", "ViTModel"])
def test_another_resolution_without_interpolation_is_refused_as_hf_refuses_it(model_dirs, architecture):
    model, reference = loaded(model_dirs, architecture)
    images = pixels(model.hf_model.config, size=24)
    with pytest.raises(ValueError, match="doesn't match model") as from_hf:
        reference(images)
    with pytest.raises(ValueError, match="doesn't match model") as from_bridge:
        model.run_with_cache(images, return_type="pooled")
    assert str(from_bridge.value) == str(from_hf.value)


def test_interpolate_pos_encoding_is_refused_by_language_models_and_dinov2(model_dirs):
    model, _ = loaded(model_dirs, "Dinov2Model")
    with pytest.raises(bridge.BridgeError, match="interpolate_pos_encoding"):
        model(pixels(model.hf_model.config), return_type="hidden", interpolate_pos_encoding=True)


def test_vit_patch_position_and_pooled_hooks_are_what_the_weights_give(model_dirs):
    model, reference = loaded(model_dirs, "ViTModel")
    images = pixels(model.hf_model.config, batch=3)
    pooled, cache = model.run_with_cache(images, return_type="pooled")
    embeddings = model.hf_model.embeddings
    conv = embeddings.patch_embeddings.projection
    patches = einops.rearrange(images, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=4, pw=4)
    by_hand = patches @ einops.rearrange(conv.weight, "d c ph pw -> (c ph pw) d") + conv.bias
    torch.testing.assert_close(cache["hook_patch_embed"], by_hand, **TOL)
    table = embeddings.position_embeddings.detach()
    torch.testing.assert_close(cache["hook_pos_embed"], table.expand(3, -1, -1), atol=0, rtol=0)
    cls = embeddings.cls_token.detach().expand(3, -1, -1)
    resid = torch.cat([cls, cache["hook_patch_embed"]], dim=1) + cache["hook_pos_embed"]
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], resid, **TOL)
    hf = reference(images)
    torch.testing.assert_close(pooled, hf.pooler_output, **TOL)
    torch.testing.assert_close(cache["hook_pooled"], hf.pooler_output, **TOL)
    last = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(reference.layernorm(last), hf.last_hidden_state, **TOL)
    torch.testing.assert_close(cache["ln_post.hook_scale"].shape, torch.Size([3, 17, 1]))


def test_vit_classifier_reads_the_cls_position_after_ln_post(model_dirs):
    model, reference = loaded(model_dirs, "ViTForImageClassification")
    images = pixels(model.hf_model.config)
    logits, cache = model.run_with_cache(images, return_type="logits")
    torch.testing.assert_close(logits, reference(images).logits, **TOL)
    last = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(cache["hook_pooled"], reference.vit.layernorm(last)[:, 0], **TOL)
    torch.testing.assert_close(cache["hook_pooled"] @ model.W_U + model.b_U, logits, **TOL)


def test_dinov2_register_tokens_sit_after_cls_and_take_no_position(model_dirs):
    model, reference = loaded(model_dirs, "Dinov2WithRegistersModel")
    registers = model.cfg.extra["register_positions"]
    assert registers == range(1, 3) and model.cfg.n_ctx == 1 + 2 + 16
    images = pixels(model.hf_model.config)
    _, cache = model.run_with_cache(images, return_type="hidden")
    tokens = reference.embeddings.register_tokens.detach()  # [1, r, d]
    assert tokens.abs().min() > 0  # the tiny model's registers are not HF's zeros
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"][:, registers], tokens.expand(2, -1, -1), atol=0, rtol=0)
    assert cache["hook_pos_embed"][:, registers].abs().max() == 0

    def move_register_1(t, hook):  # a patch at a register's row of hook_pos_embed adds to that register token
        t = t.clone()
        t[:, 1] += 1.0
        return t

    got = model.run_with_hooks(images, fwd_hooks=[("hook_pos_embed", move_register_1)], return_type="hidden")

    def edit(_module, _args, out):
        out = out.clone()
        out[:, 1] += 1.0
        return out

    handle = reference.embeddings.register_forward_hook(edit)
    try:
        expected = reference(images).last_hidden_state
    finally:
        handle.remove()
    torch.testing.assert_close(got, expected, **TOL)


def test_dinov2_layer_scale_is_in_the_sublayer_outputs(model_dirs):
    """``hook_attn_out`` is ``layer_scale1`` of the attention's output (HF's modules on ``ln1``'s output), and
    the cache analysis knows per-head results do not add up to it."""
    model, reference = loaded(model_dirs, "Dinov2Model")
    images = pixels(model.hf_model.config)
    _, cache = model.run_with_cache(images, return_type="hidden")
    layer = reference.encoder.layer[1]
    with torch.no_grad():
        attention = layer.attention(layer.norm1(cache["blocks.1.hook_resid_pre"]))[0]
        mlp = layer.mlp(layer.norm2(cache["blocks.1.hook_resid_mid"]))
    scale1, scale2 = layer.layer_scale1.lambda1, layer.layer_scale2.lambda1
    assert (scale1 - 0.5).abs().max() > 1e-3  # the tiny model's scales differ per channel
    torch.testing.assert_close(cache["blocks.1.hook_attn_out"], attention * scale1, **TOL)
    torch.testing.assert_close(cache["blocks.1.hook_mlp_out"], mlp * scale2, **TOL)
    layout = block_layout(model.blocks[1], 1)
    assert not layout.heads_write and "attn_scale" in layout.why_not["attn"]
    assert not layout.neurons_write and "mlp_scale" in layout.why_not["mlp"]


@pytest.mark.parametrize("architecture", ["ViTModel", "Dinov2WithRegistersModel"])
def test_images_go_through_the_image_processor_built_here(model_dirs, architecture):
    model, reference = loaded(model_dirs, architecture)
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)) for _ in range(2)]
    values = model.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
    assert values.shape == (2, 3, 16, 16)
    torch.testing.assert_close(model(pictures, return_type="hidden"), reference(values).last_hidden_state, **TOL)


def test_examples_cover_registers_and_swiglu():
    examples = examples_of(Dinov2Adapter)
    assert examples.example_config("Dinov2WithRegistersModel").num_register_tokens == 2
    assert examples.conformance_configs()["dinov2-swiglu"].use_swiglu_ffn
    assert examples_of(ViTAdapter).example_config().architectures == ["ViTModel"]


def test_the_kit_catches_a_layer_scale_the_block_does_not_declare(monkeypatch, tmp_path):
    """A block that scales its sublayer outputs as DINOv2 does without declaring it (an author's slip) fails."""
    monkeypatch.setattr(LayerScaleBlock, "sublayer_output_modules", {"attn": (), "mlp": ()})
    pair = make_pair(Dinov2Adapter, "Dinov2Model", directory=tmp_path)
    with pytest.raises(ConformanceError, match=r"blocks\.0\.hook_mlp_out vs HF's MLP on patched hook_resid_mid"):
        check_residual_algebra(pair)
