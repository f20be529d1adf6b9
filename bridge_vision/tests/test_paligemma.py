"""PaliGemma against HF's own model: positions counted from 1 (HF computes them; the bridge passes none), the
prefix attending both ways, and text and images through PaliGemma's own processor (built and loaded offline)."""

import sys

import numpy as np
import torch
from PIL import Image
from transformers import PaliGemmaForConditionalGeneration

import bridge
from bridge.testing import examples_of, expect_close


def test_positions_count_from_one_as_hf_counts_them(vlm_pair):
    """RoPE is relative, so the logits do not show it, but the rotated queries and keys do: ``hook_rot_q``/
    ``hook_rot_k`` are what HF's eager attention receives (positions 1, 2, …), not the rotation by 0, 1, …"""
    pair = vlm_pair("paligemma")
    inputs = dict(examples_of(type(pair.bridge.adapter)).example_input(pair.bridge.hf_model.config).inputs)
    module_file = sys.modules[type(pair.reference.model.language_model.layers[0].self_attn).__module__]
    original, seen = module_file.eager_attention_forward, []

    def recording(attn, query, key, *args, **kwargs):
        seen.append((query.detach(), key.detach()))
        return original(attn, query, key, *args, **kwargs)

    module_file.eager_attention_forward = recording
    try:
        with torch.no_grad():
            pair.reference(**inputs)
    finally:
        module_file.eager_attention_forward = original
    names = ["blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k"]
    _, cache = pair.bridge.run_with_cache(inputs, names_filter=names)
    expect_close(cache[names[0]], seen[0][0].transpose(1, 2), "hook_rot_q vs the query HF's attention reads")
    expect_close(cache[names[1]], seen[0][1].transpose(1, 2), "hook_rot_k vs the key HF's attention reads")
    zero_based = torch.arange(inputs["input_ids"].shape[1])[None]
    _, shifted = pair.bridge.run_with_cache(inputs, names_filter=names, position_ids=zero_based)
    assert (shifted[names[0]] - cache[names[0]]).abs().max() > 1e-2


def test_prefix_attends_both_ways_and_the_suffix_causally(vlm_pair):
    pair = vlm_pair("paligemma")
    inputs = dict(examples_of(type(pair.bridge.adapter)).example_input(pair.bridge.hf_model.config).inputs)
    _, cache = pair.bridge.run_with_cache(inputs, names_filter="blocks.0.attn.hook_pattern")
    pattern = cache["blocks.0.attn.hook_pattern"]  # [b, h, q, k]
    prefix = int((inputs["token_type_ids"][0] == 0).sum())
    assert pattern[..., : prefix - 1, prefix - 1].min() > 0  # early prefix tokens see the last prefix token
    assert pattern[..., prefix:, :].triu(1 + prefix)[..., prefix:].abs().max() == 0  # the suffix sees no later token


def test_text_and_images_through_paligemmas_processor(vlm_pair):
    pair = vlm_pair("paligemma")
    model = pair.bridge
    assert type(model.processor).__name__ == "PaliGemmaProcessor"
    rng = np.random.default_rng(1)
    pictures = [Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)) for _ in range(2)]
    texts = ["<image>caption the cat", "<image>what is this"]
    encoded = model.processor(text=texts, images=pictures, return_tensors="pt", padding=True)
    assert "token_type_ids" in encoded
    expected = pair.reference(**encoded).logits
    real = encoded["attention_mask"].bool()
    logits, cache = model.run_with_cache(texts, pixel_values=pictures)
    expect_close(logits[real], expected[real], "text + PIL images through the processor vs HF on its output")
    assert cache["vision_projector.hook_out"].shape == (2, 16, model.cfg.d_model)


def test_text_alone_follows_the_attention_implementation_the_model_was_loaded_with(vlm_dirs):
    """HF's two paths disagree on text without ``token_type_ids``: PaliGemma's language model is bidirectional
    (``use_bidirectional_attention``) and its causal mask is skipped for SDPA, so SDPA attends both ways while
    eager (given the causal mask) attends causally. The bridge follows the implementation the model has, on the
    native path and on the hooked (eager) path alike."""
    directory = vlm_dirs("paligemma")
    tokens = torch.randint(1, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    later = tokens.clone()
    later[:, -1] = (later[:, -1] + 1) % 128
    for implementation, causal in (("sdpa", False), ("eager", True)):
        reference = PaliGemmaForConditionalGeneration.from_pretrained(directory, attn_implementation=implementation)
        expected = reference.eval()(input_ids=tokens).logits
        moved = (expected[:, :-1] - reference(input_ids=later).logits[:, :-1]).abs().max()
        assert (moved == 0) == causal, (implementation, moved)
        model = bridge.load(directory, attn_implementation=implementation)
        expect_close(model(tokens), expected, f"text alone, native path, {implementation}")
        with model.hooks(fwd_hooks=[(lambda n: n.endswith("attn.hook_pattern"), lambda t, hook: None)]):
            expect_close(model(tokens), expected, f"text alone, hooked path, {implementation}")
