"""Vision-language models against HF's own model on the same inputs: logits with every hook cached for any
batch, text length and image place; ``vision_projector.hook_out`` patched vs the image embeddings edited by
hand; a vision head zeroed at ``hook_z`` vs its output-projection columns zeroed; text only; text and images
through LLaVA's processor; images through the image processor; greedy generation with pixel values; text-model
code (logit lens, weight views, short cache keys) on the language model; the input errors."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import GenerationConfig

import bridge
from bridge.kernel.errors import BadInputError
from bridge.testing import examples_of, expect_close
from bridge_vision.examples import IMAGE_TOKEN_ID, TINY_VOCAB, VLM_CASES

TOL = dict(atol=1e-5, rtol=0)


def images(n, size=20, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(params=list(VLM_CASES))
def case(request):
    return request.param


#: The cases whose image tower reads pixel values ``[b, channels, height, width]`` and whose projector reads the
#: tower's state (Idefics3, SmolVLM and InternVL have tests of their own for these).
TOWER_CASES = [name for name in VLM_CASES if not name.startswith(("idefics3", "smolvlm", "internvl"))]


@pytest.fixture(params=TOWER_CASES)
def tower_case(request):
    return request.param


def hf_path(pair, module):
    """Where ``module`` (of the bridged HF model) sits, so the same module of the reference can be found."""
    return next(name for name, m in pair.bridge.hf_model.named_modules() if m is module)


def inputs_for(pair, batch=2, seed=0):
    return dict(examples_of(type(pair.bridge.adapter)).example_input(pair.bridge.hf_model.config, batch, seed).inputs)


def image_features(reference, pixel_values):
    """HF's image tokens for the language model, every image's in order ``[n_image_tokens_total, d_model]``, from
    its own method."""
    with torch.no_grad():
        pooled = reference.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
    return torch.cat([part.reshape(-1, part.shape[-1]) for part in pooled])


def test_logits_equal_hf_with_every_hook_cached_given_as_input_ids_and_pixel_values(vlm_pair, case):
    pair = vlm_pair(case)
    inputs = inputs_for(pair, batch=3, seed=5)
    expected = pair.reference(**inputs).logits
    logits, cache = pair.bridge.run_with_cache(**inputs)
    expect_close(logits, expected, f"{case}: logits with every hook cached vs HF")
    assert set(cache) == {n for n, h in pair.bridge.hook_dict.items() if h.enabled}
    n_image = type(pair.bridge.adapter).image_tokens(pair.bridge.hf_model.config)
    assert cache["vision_projector.hook_out"].shape == (3, n_image, pair.bridge.cfg.d_model)
    assert cache["blocks.0.attn.hook_pattern"].shape[-1] == inputs["input_ids"].shape[1]
    rows = cache["vision_projector.hook_out"].flatten(0, 1)
    expect_close(rows, image_features(pair.reference, inputs["pixel_values"]), "hook_out")


def test_llava_logits_for_any_batch_text_length_and_image_place(vlm_pair):
    pair = vlm_pair("llava-llama")
    config = pair.bridge.hf_model.config
    n_image = type(pair.bridge.adapter).image_tokens(config)
    size = config.vision_config.image_size

    @settings(max_examples=6, deadline=None)
    @given(batch=st.integers(1, 3), before=st.integers(0, 4), after=st.integers(1, 5), seed=st.integers(0, 1000))
    def logits_match(batch, before, after, seed):
        generator = torch.Generator().manual_seed(seed)
        text = torch.randint(1, TINY_VOCAB, (batch, before + after), generator=generator)
        image = torch.full((batch, n_image), IMAGE_TOKEN_ID)
        tokens = torch.cat([text[:, :before], image, text[:, before:]], dim=1)  # [b, before + n_image + after]
        pixels = torch.randn(batch, 3, size, size, generator=generator)
        expected = pair.reference(input_ids=tokens, pixel_values=pixels).logits
        got, _ = pair.bridge.run_with_cache(tokens, pixel_values=pixels)
        expect_close(got, expected, f"logits, batch {batch}, image after {before} text tokens")

    logits_match()


def test_patch_at_projector_output_equals_editing_the_image_embeddings_by_hand(vlm_pair, case):
    pair = vlm_pair(case)
    inputs = inputs_for(pair)
    tokens = inputs["input_ids"]
    features = image_features(pair.reference, inputs["pixel_values"])  # [n_image_tokens_total, d_model]
    delta = torch.randn(features.shape, generator=torch.Generator().manual_seed(3))
    got = pair.bridge.run_with_hooks(
        **inputs,
        fwd_hooks=[("vision_projector.hook_out", lambda t, hook: t + delta.view(t.shape))],
        return_type="logits",
    )
    with torch.no_grad():
        embeds = pair.reference.get_input_embeddings()(tokens)  # [b, p, d_model]
        embeds[tokens == pair.bridge.hf_model.config.image_token_id] = features + delta
        rest = {k: v for k, v in inputs.items() if k not in ("input_ids", "pixel_values")}
        expected = pair.reference(inputs_embeds=embeds, **rest).logits
    expect_close(got, expected, f"{case}: hook_out + delta vs the image embeddings + delta by hand")
    assert (got - pair.reference(**inputs).logits).abs().max() > 1e-2  # the patch reached the logits


def test_projector_input_is_the_image_tower_state_it_reads(vlm_pair, tower_case):
    """LLaVA reads the tower's hidden state of ``vision_feature_layer`` (-1 here) at the patch positions (CLS
    dropped); Gemma 3 and PaliGemma its last hidden state (after ``ln_post``): both from HF's own image tower."""
    case = tower_case
    pair = vlm_pair(case)
    inputs = inputs_for(pair)
    _, cache = pair.bridge.run_with_cache(**inputs)
    with torch.no_grad():
        tower = pair.reference.model.vision_tower(pixel_values=inputs["pixel_values"], output_hidden_states=True)
    after_ln_post = not case.startswith("llava")
    expected = tower.last_hidden_state if after_ln_post else tower.hidden_states[-1][:, 1:]
    expect_close(cache["vision_projector.hook_in"], expected, f"{case}: hook_in vs HF's image tower")
    if not after_ln_post:
        last = f"vision_encoder.blocks.{pair.bridge.vision_encoder.cfg.n_layers - 1}.hook_resid_post"
        expect_close(cache["vision_projector.hook_in"], cache[last][:, 1:], "hook_in vs the last block, CLS dropped")


def test_vision_head_ablation_equals_weight_surgery(vlm_pair, case, layer=1, head=2):
    pair = vlm_pair(case)
    inputs = inputs_for(pair)

    def ablate(z, hook):  # z: [b, p, n_heads, d_head]
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    got = pair.bridge.run_with_hooks(**inputs, fwd_hooks=[(f"vision_encoder.blocks.{layer}.attn.hook_z", ablate)])
    surgery = copy.deepcopy(pair.reference)
    out_proj = surgery.get_submodule(hf_path(pair, pair.bridge.vision_encoder.blocks[layer].attn.out_proj))
    d_head = pair.bridge.vision_encoder.cfg.d_head
    with torch.no_grad():
        out_proj.weight[:, head * d_head : (head + 1) * d_head] = 0.0  # nn.Linear: [out, in]
    expected = surgery(**inputs).logits
    expect_close(got, expected, f"{case}: vision head {layer}.{head} zeroed at hook_z vs its out_proj columns zeroed")
    assert (expected - pair.reference(**inputs).logits).abs().max() > 1e-3


def test_text_only_runs_as_the_language_model(vlm_pair, case):
    if case.startswith("paligemma"):
        pytest.skip("HF's eager and SDPA PaliGemma disagree on text alone (test_paligemma.py checks both)")
    pair = vlm_pair(case)
    tokens = torch.randint(1, TINY_VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    expect_close(pair.bridge(tokens), pair.reference(input_ids=tokens).logits, f"{case}: text only")
    _, cache = pair.bridge.run_with_cache(tokens)
    assert not any(name.startswith("vision_") for name in cache)  # the image parts do not run


def test_text_and_images_through_llava_processor(vlm_pair):
    pair = vlm_pair("llava-llama")
    model = pair.bridge
    assert type(model.processor).__name__ == "LlavaProcessor"
    texts, pictures = ["the cat <image> sat", "<image> a dog"], images(2)
    encoded = model.processor(text=texts, images=pictures, return_tensors="pt", padding=True)
    expected = pair.reference(**encoded).logits
    logits, cache = model.run_with_cache(texts, pixel_values=pictures)
    real = encoded["attention_mask"].bool()  # padding positions hold no prediction (their positions differ)
    expect_close(logits[real], expected[real], "text + PIL images through the processor vs HF on its output")
    expect_close(model(dict(encoded))[real], expected[real], "the processor's output as one dict")
    assert cache["vision_projector.hook_out"].shape[:2] == (2, 16)


def test_images_through_the_image_processor_beside_tokens(vlm_pair, tower_case):
    case = tower_case
    pair = vlm_pair(case)
    inputs = inputs_for(pair)
    pictures = images(2, seed=3)
    pixels = pair.bridge.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
    expected = pair.reference(**{**inputs, "pixel_values": pixels}).logits
    rest = {k: v for k, v in inputs.items() if k != "pixel_values"}
    expect_close(pair.bridge(**rest, pixel_values=pictures), expected, f"{case}: PIL images beside tokens")


def test_greedy_generation_with_pixel_values_equals_hf(vlm_pair, case):
    pair = vlm_pair(case)
    inputs = inputs_for(pair, batch=1)
    config = GenerationConfig(max_new_tokens=5, do_sample=False, eos_token_id=[], pad_token_id=0)
    mask = torch.ones_like(inputs["input_ids"])  # else HF takes the BOS (id 0, the pad id too) for padding
    expected = pair.reference.generate(**inputs, attention_mask=mask, generation_config=config)
    if "token_type_ids" in inputs or inputs["pixel_values"].ndim != 4:  # as the processor's output, one dict
        prompt, images_kwarg = inputs, {}
    else:
        prompt, images_kwarg = inputs["input_ids"], {"pixel_values": inputs["pixel_values"]}
    got, steps = pair.bridge.generate(
        prompt,
        **images_kwarg,
        max_new_tokens=5,
        do_sample=False,
        stop_at_eos=False,
        return_type="tokens",
        verbose=False,
        names_filter="vision_projector.hook_out",
    )
    assert torch.equal(got, expected), (got, expected)
    assert "vision_projector.hook_out" in steps[0] and "vision_projector.hook_out" not in steps[1]


def test_text_model_code_runs_unchanged_on_the_language_model(vlm_pair):
    pair = vlm_pair("llava-llama")
    model = pair.bridge
    inputs = inputs_for(pair)
    logits, cache = model.run_with_cache(**inputs)
    lens = cache.accumulated_resid(apply_ln=True, pos_slice=-1) @ model.W_U  # [layer, b, d_vocab]
    expect_close(lens[-1], logits[:, -1], "logit lens of the final residual vs the logits")
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 64 and model.vision_encoder.cfg.d_model == 32
    assert model.W_Q.shape == (2, 4, 64, 16) and model.vision_encoder.blocks[0].attn.W_Q.shape == (4, 32, 8)
    expect_close(cache["resid_post", 0], cache["blocks.0.hook_resid_post"], "short key")
    resid = model(**inputs, stop_at_layer=1)
    expect_close(resid, cache["blocks.1.hook_resid_pre"], "stop_at_layer=1 vs blocks.1.hook_resid_pre")
    loss = model(**inputs, return_type="loss")
    expect_close(loss, pair.reference(**inputs, labels=inputs["input_ids"]).loss, "loss vs HF's")


def test_input_errors_say_what_to_pass(vlm_pair):
    model = vlm_pair("llava-llama").bridge
    inputs = inputs_for(vlm_pair("llava-llama"))
    with pytest.raises(BadInputError, match="either as one mapping"):
        model(dict(inputs), pixel_values=inputs["pixel_values"])
    with pytest.raises(BadInputError, match="needs input_ids"):
        model({"pixel_values": inputs["pixel_values"]})
    with pytest.raises(BadInputError, match="float tensor"):
        model(inputs["input_ids"], pixel_values=inputs["pixel_values"].long())
    with pytest.raises(BadInputError, match="either as the input or as input_ids"):
        model(inputs["input_ids"], input_ids=inputs["input_ids"])
    with pytest.raises(BadInputError, match="takes no input named"):
        model({**inputs, "pixel_mask": inputs["pixel_values"]})


def test_loaded_with_its_processor_and_listed_by_the_registry(vlm_dirs):
    model = bridge.load(vlm_dirs("llava-qwen2"))
    assert type(model.adapter).__name__ == "LlavaAdapter"
    assert model.cfg.extra["language_adapter"].endswith("Qwen2Adapter")
    assert type(model.processor).__name__ == "LlavaProcessor"
    registry = bridge.get_registry()
    assert registry.by_architecture["LlavaForConditionalGeneration"].distribution == "bridge-vision"
    assert registry.by_architecture["Gemma3ForConditionalGeneration"].distribution == "bridge-vision"


def test_vision_backward_hooks_equal_hf_autograd(vlm_pair, case):
    """d(loss)/d(the image tower's block-0 output) from a backward hook vs the reference's own autograd."""
    pair = vlm_pair(case)
    inputs = inputs_for(pair, batch=1)
    leaf = {}

    def make_leaf(_module, _args, out):
        first = out[0] if isinstance(out, tuple) else out
        leaf["x"] = first.detach().requires_grad_(True)
        return (leaf["x"], *out[1:]) if isinstance(out, tuple) else leaf["x"]

    block = pair.reference.get_submodule(hf_path(pair, pair.bridge.vision_encoder.blocks[0].hf))
    handle = block.register_forward_hook(make_leaf)
    try:
        loss = pair.reference(**inputs, labels=inputs["input_ids"]).loss
    finally:
        handle.remove()
    (expected,) = torch.autograd.grad(loss, leaf["x"])
    grads = {}
    name = "vision_encoder.blocks.0.hook_resid_post"
    got = pair.bridge.run_with_hooks(
        **inputs, bwd_hooks=[(name, lambda g, hook: grads.__setitem__("g", g))], return_type="loss"
    )
    got.backward()
    expect_close(grads["g"], expected, f"{case}: backward hook at {name} vs HF autograd")
    assert expected.abs().max() > 1e-4
