"""A vision-language model's language model comes from the plugin registry: one whose family no installed plugin
handles, or whose plugin (bridge-llama) is not loaded, raises ``UnknownArchitectureError`` naming the model, the
language model and the plugin to install; ``bridge plugins`` lists the vision-language architectures."""

import json

import pytest
from transformers import BioGptConfig, LlavaForConditionalGeneration

import bridge
from bridge.app.cli import main
from bridge.kernel.errors import UnknownArchitectureError
from bridge.testing import examples_of, run_isolated
from bridge_vision.vlm import LlavaAdapter

SCRIPT = """
import bridge
for directory in {dirs!r}:
    try:
        bridge.load(directory)
    except bridge.UnknownArchitectureError as err:
        print("ERROR", err)
    else:
        print("LOADED", directory)
"""


def test_a_language_model_no_plugin_handles_is_named_with_no_plugin_to_install():
    text = BioGptConfig(
        num_hidden_layers=1, hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=129
    )
    assert "biogpt" not in bridge.get_registry().by_model_type  # the premise: no installed plugin bridges BioGPT
    hf_model = LlavaForConditionalGeneration(examples_of(LlavaAdapter).example_config(text_config=text))
    with pytest.raises(UnknownArchitectureError) as err:
        bridge.wrap(hf_model)
    message = str(err.value)
    assert "LlavaAdapter" in message and "'biogpt'" in message and "bridge knows no plugin" in message
    assert hf_model.config.text_config._attn_implementation != "bridge"  # nothing was attached


def test_without_bridge_llama_loaded_the_error_names_it(vlm_dirs):
    cases = ["llava-llama", "llava-qwen2", "gemma3", "qwen2-vl", "qwen3-vl"]
    result = run_isolated(SCRIPT.format(dirs=[str(vlm_dirs(case)) for case in cases]), "bridge-vision")
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == len(cases), result.stdout
    kinds = ("llama", "qwen2", "gemma3_text", "qwen2_vl_text", "qwen3_vl_text")
    for error, kind in zip(errors, kinds, strict=True):
        assert f"model_type {kind!r}" in error and "pip install bridge-llama" in error, error
    assert "LlavaAdapter" in errors[0] and "Gemma3VisionAdapter" in errors[2]
    assert "laid out as 'qwen2'" in errors[3] and "laid out as 'qwen3'" in errors[4]


def test_bridge_plugins_lists_the_vision_language_models(capsys):
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    vision = next(p for p in listing if p["distribution"] == "bridge-vision")
    for name in (
        "LlavaForConditionalGeneration",
        "Gemma3ForConditionalGeneration",
        "LlavaNextForConditionalGeneration",
        "LlavaOnevisionForConditionalGeneration",
        "PaliGemmaForConditionalGeneration",
        "Idefics3ForConditionalGeneration",
        "SmolVLMForConditionalGeneration",
        "InternVLForConditionalGeneration",
        "Qwen2VLForConditionalGeneration",
        "Qwen2_5_VLForConditionalGeneration",
        "Qwen3VLForConditionalGeneration",
        "ViTModel",
        "ViTForImageClassification",
        "Dinov2Model",
        "Dinov2WithRegistersModel",
        "llava",
        "gemma3",
    ):
        assert name in vision["architectures"]
    assert "bridge_vision.vlm.LlavaAdapter" in vision["adapters"]
