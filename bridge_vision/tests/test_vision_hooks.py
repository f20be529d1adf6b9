"""What the vision hooks hold and what a patch there does, each against an independent computation:
the patch convolution and position table applied by hand, torch hooks on the HF reference's own modules,
the two-tower logits recomputed from the HF weights; attention is not causal; any batch size (hypothesis)."""

import copy

import einops
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bridge
from bridge.testing import examples_of
from bridge_vision import CLIPAdapter, CLIPVisionAdapter, Siglip2VisionAdapter, SiglipVisionAdapter

TOL = dict(atol=1e-5, rtol=0)


def loaded(model_dirs, architecture):
    model = bridge.load(model_dirs[architecture])
    reference = copy.deepcopy(bridge.unwrap(bridge.load(model_dirs[architecture]).hf_model))
    reference.set_attn_implementation("eager")
    return model, reference


def pixels_for(adapter, model, batch=2, seed=0):
    return examples_of(adapter).example_input(model.hf_model.config, batch, seed).inputs


def test_patch_and_position_embeddings_are_what_their_weights_give(model_dirs):
    model, _ = loaded(model_dirs, "CLIPVisionModel")
    pixels = pixels_for(CLIPVisionAdapter, model, batch=3)["pixel_values"]
    _, cache = model.run_with_cache(pixels, return_type=None)
    embeddings = model.hf_model.embeddings
    conv = embeddings.patch_embedding
    # the convolution by hand: cut [b, c, 16, 16] into 4 x 4 patches, row-major, each flattened as the kernel is
    patches = einops.rearrange(pixels, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=4, pw=4)
    expected = patches @ einops.rearrange(conv.weight, "d c ph pw -> (c ph pw) d")
    torch.testing.assert_close(cache["hook_patch_embed"], expected, **TOL)
    assert cache["hook_patch_embed"].shape == (3, 16, 32)
    table = embeddings.position_embedding.weight.detach()
    torch.testing.assert_close(cache["hook_pos_embed"], einops.repeat(table, "p d -> b p d", b=3), atol=0, rtol=0)
    # the residual stream entering block 0 is ln_pre of [CLS | patches] + positions
    cls = einops.repeat(embeddings.class_embedding.detach(), "d -> b 1 d", b=3)
    summed = torch.cat([cls, cache["hook_patch_embed"]], dim=1) + cache["hook_pos_embed"]
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], model.hf_model.pre_layrnorm(summed), **TOL)
    torch.testing.assert_close(
        cache["ln_pre.hook_normalized"] * model.hf_model.pre_layrnorm.weight + model.hf_model.pre_layrnorm.bias,
        cache["blocks.0.hook_resid_pre"],
        **TOL,
    )
    assert cache["ln_post.hook_scale"].shape == (3, 1)  # CLIP's ln_post normalizes the CLS position only


def test_patching_patch_and_position_embeddings_matches_hooks_on_hf_modules(model_dirs):
    model, reference = loaded(model_dirs, "SiglipVisionModel")
    pixels = pixels_for(SiglipVisionAdapter, model)["pixel_values"]
    delta = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(5))

    def zero_patch_3(t, hook):
        t = t.clone()
        t[:, 3] = 0.0
        return t

    got = model.run_with_hooks(
        pixels,
        fwd_hooks=[("hook_patch_embed", zero_patch_3), ("hook_pos_embed", lambda t, hook: t + delta)],
        return_type="pooled",
    )
    embeddings = reference.embeddings
    table = embeddings.position_embedding.weight.detach()

    def edit(_module, _args, out):  # out = patches + positions: patch 3 loses its patch term, all gain delta
        out = out + delta
        out[:, 3] = table[3] + delta[:, 3]
        return out

    handle = embeddings.register_forward_hook(edit)
    expected = reference(pixels).pooler_output
    handle.remove()
    torch.testing.assert_close(got, expected, **TOL)
    assert not torch.allclose(expected, reference(pixels).pooler_output, atol=1e-4)


def test_siglip2_position_hook_sees_each_images_resized_table(model_dirs):
    model, reference = loaded(model_dirs, "Siglip2VisionModel")
    inputs = pixels_for(Siglip2VisionAdapter, model)
    _, cache = model.run_with_cache(inputs, names_filter=["hook_pos_embed", "hook_patch_embed"], return_type=None)
    embeddings = reference.embeddings
    side = embeddings.position_embedding_size
    table = embeddings.position_embedding.weight.detach().reshape(side, side, -1)
    expected = embeddings.resize_positional_embeddings(table, inputs["spatial_shapes"], max_length=16)
    torch.testing.assert_close(cache["hook_pos_embed"], expected, atol=0, rtol=0)
    torch.testing.assert_close(cache["hook_patch_embed"], embeddings.patch_embedding(inputs["pixel_values"]), **TOL)
    delta = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(6))
    got = model.run_with_hooks(inputs, fwd_hooks=[("hook_pos_embed", lambda t, hook: t + delta)], return_type="hidden")
    handle = embeddings.register_forward_hook(lambda _m, _a, out: out + delta)
    expected = reference(**inputs).last_hidden_state
    handle.remove()
    torch.testing.assert_close(got, expected, **TOL)


def test_attention_is_not_causal(model_dirs):
    model, _ = loaded(model_dirs, "CLIPVisionModel")
    _, cache = model.run_with_cache(
        pixels_for(CLIPVisionAdapter, model), names_filter=lambda n: n.endswith("pattern"), return_type=None
    )
    pattern = cache["pattern", 0]  # [b, heads, 17, 17]
    assert pattern.shape == (2, 4, 17, 17)
    assert pattern.triu(1).sum(-1)[..., :-1].min() > 1e-3  # every query but the last attends to later positions


def test_two_tower_text_attention_is_causal_on_the_hooked_path(model_dirs):
    model, _ = loaded(model_dirs, "CLIPModel")
    inputs = pixels_for(CLIPAdapter, model)
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("pattern"), return_type=None)
    assert cache["text.blocks.0.attn.hook_pattern"].triu(1).abs().max() == 0
    assert cache["vision.blocks.0.attn.hook_pattern"].triu(1).sum(-1)[..., :-1].min() > 1e-3


def test_patching_image_embeds_changes_logits_as_the_hf_weights_say(model_dirs):
    """A patch at ``hook_image_embeds`` gives the logits recomputed from the patched embeddings with the HF
    model's own text embeddings and logit scale (cosine similarity times exp(logit_scale))."""
    model, reference = loaded(model_dirs, "CLIPModel")
    inputs = pixels_for(CLIPAdapter, model)
    swap = lambda t, hook: t.flip(0)  # noqa: E731  (image 0 gets image 1's embedding and back)
    got, cache = model.run_with_cache(inputs, names_filter=["hook_text_embeds"], return_type="logits")
    patched = model.run_with_hooks(inputs, fwd_hooks=[("hook_image_embeds", swap)], return_type="logits")
    ref = reference(**inputs)
    torch.testing.assert_close(got, ref.logits_per_image, **TOL)
    torch.testing.assert_close(patched, ref.logits_per_image.flip(0), **TOL)
    image = reference.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output.flip(0)
    text = cache["hook_text_embeds"]
    cosine = torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    torch.testing.assert_close(patched, cosine * reference.logit_scale.exp(), **TOL)


def test_head_ablation_in_the_text_tower_equals_weight_surgery(model_dirs):
    model, reference = loaded(model_dirs, "SiglipModel")
    inputs = pixels_for(CLIPAdapter, model)

    def ablate(z, hook):
        z = z.clone()
        z[:, :, 2] = 0.0
        return z

    got = model.run_with_hooks(inputs, fwd_hooks=[("text.blocks.1.attn.hook_z", ablate)])
    with torch.no_grad():
        reference.text_model.encoder.layers[1].self_attn.out_proj.weight[:, 16:24] = 0.0  # head 2 of d_head 8
    torch.testing.assert_close(got, reference(**inputs).logits_per_image, **TOL)


@settings(max_examples=6, deadline=None)
@given(batch=st.integers(1, 4), seed=st.integers(0, 2**16), hooked=st.booleans())
def test_any_batch_equals_hf(model_dirs, batch, seed, hooked):
    model, reference = _cached(model_dirs)
    pixels = examples_of(CLIPVisionAdapter).example_input(model.hf_model.config, batch, seed).inputs["pixel_values"]
    names = (lambda n: True) if hooked else ["blocks.1.hook_resid_post"]
    out, cache = model.run_with_cache(pixels, names_filter=names, return_type="pooled")
    expected = reference(pixels, output_hidden_states=True)
    torch.testing.assert_close(out, expected.pooler_output, **TOL)
    torch.testing.assert_close(cache["blocks.1.hook_resid_post"], expected.hidden_states[2], **TOL)


_models = {}


def _cached(model_dirs):
    if "clip" not in _models:
        _models["clip"] = loaded(model_dirs, "CLIPVisionModel")
    return _models["clip"]
