"""The cfg fields TransformerLens code reads, on every installed adapter's example model, against the HF
model itself (its norm modules, its parameters, its config)."""

from __future__ import annotations

import pytest

import bridge
from bridge.kernel.components.norm import norm_epsilon
from bridge.kernel.plugins import get_registry
from bridge.testing import build_tiny_model, examples_of, tiny_tokenizer

# Causal language models: token inputs, a final norm and LM heads (image models have their own checks in
# bridge_vision; encoders and encoder-decoders, scored against labels, in bridge_encoders).
ADAPTERS = [
    adapter
    for info in get_registry().plugins
    for adapter in info.adapters
    if adapter.modalities == ("text",) and adapter.loss_kind == "next_token"
]
GATED = {
    "Llama",
    "Mistral",
    "Qwen2",
    "Qwen3",
    "Gemma2",
    "Gemma3",
    "Phi3",
    "Olmo2",
    "Mixtral",
    "DeepseekV2",
    "DeepseekV3",
    "Gemma",
    "Granite",
    "Olmo",
    "Olmo3",
    "SmolLM3",
    "StableLm",
    "Cohere",
    "Cohere2",
    "Glm4",
    "Glm",
    "Llama4",
    "Glm4Moe",
    "Olmoe",
    "Qwen2Moe",
    "Qwen3Moe",
    "Phimoe",
    "GraniteMoe",
    "GptOss",
    "Ernie4_5",
    "SeedOss",
    "Exaone4",
    "HunYuanDenseV1",
    "HunYuanMoEV1",
    "DeepseekV32",
    "GlmMoeDsa",
    "MiniMax",
    # the hybrids' attention layers sit beside gated MLPs / gated experts
    "Jamba",
    "Qwen3Next",
    "Bamba",
    "GraniteMoeHybrid",
    "Qwen35",
    "Qwen35Moe",
    "Lfm2",
    "Lfm2Moe",
    "FalconH1",
    "Zamba2",
}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.__name__)
def test_cfg_fields_follow_the_hf_model(adapter):
    config = examples_of(adapter).example_config()
    hf_model = build_tiny_model(config)
    model = bridge.wrap(hf_model, tiny_tokenizer(config.vocab_size), adapter=adapter)
    cfg = model.cfg
    final_norm = model.ln_final.hf
    try:
        expected_eps = norm_epsilon(final_norm)
    except AttributeError:  # a norm that hard-codes its epsilon (OLMo's): the adapter gives it to the component
        expected_eps = model.ln_final.eps
    assert cfg.eps == expected_eps
    is_rms = "rms" in type(final_norm).__name__.lower()
    assert cfg.normalization_type == ("RMS" if is_rms else "LN")
    assert cfg.final_rms is is_rms
    assert cfg.gated_mlp is (adapter.__name__.removesuffix("Adapter") in GATED)
    assert cfg.attn_only is False
    assert cfg.original_architecture == type(hf_model).__name__
    assert cfg.d_vocab_out == hf_model.get_output_embeddings().weight.shape[0]
    assert cfg.init_range == getattr(config, "initializer_range", 0.02)
    assert cfg.device == "cpu" and cfg.dtype == next(hf_model.parameters()).dtype
