"""The conformance kit on config variants that real checkpoints use but the example configs do not:
Llama 3.x RoPE scaling with tied embeddings, Qwen2 sliding-window layers, Phi-3 LongRoPE, Mixtral with a window."""

import pytest

from bridge.testing import ALL_CHECKS, examples_of, make_pair, save_tiny_model
from bridge_llama import LlamaAdapter, MixtralAdapter, Phi3Adapter, Qwen2Adapter

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500_000.0,
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
VARIANTS = {
    "llama3.2-style": (LlamaAdapter, {"rope_parameters": LLAMA3_ROPE, "tie_word_embeddings": True}),
    "qwen2-sliding-layer": (
        Qwen2Adapter,
        {"use_sliding_window": True, "sliding_window": 4, "layer_types": ["full_attention", "sliding_attention"]},
    ),
    "phi3-longrope": (
        Phi3Adapter,
        {
            "rope_parameters": {
                "rope_type": "longrope",
                "short_factor": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7],
                "long_factor": [2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7],
                "original_max_position_embeddings": 8,
            }
        },
    ),
    "mixtral-sliding": (MixtralAdapter, {"sliding_window": 4}),
}


@pytest.fixture(scope="module")
def variant_dirs(tmp_path_factory):
    dirs = {}
    for name, (adapter, changes) in VARIANTS.items():
        example = examples_of(adapter).example_config()
        config = type(example)(**{**example.to_diff_dict(), **changes})
        dirs[name] = save_tiny_model(config, tmp_path_factory.mktemp(name))
    return dirs


@pytest.mark.parametrize("path", ["native", "hooked"])
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_conformance(variant_dirs, variant, check, path):
    adapter, _ = VARIANTS[variant]
    pair = make_pair(adapter, path=path, directory=variant_dirs[variant])
    config = pair.bridge.hf_model.config
    if variant == "llama3.2-style":
        assert config.tie_word_embeddings and config.rope_parameters["rope_type"] == "llama3"
    elif variant == "phi3-longrope":
        assert config.rope_parameters["rope_type"] == "longrope"
    elif variant == "qwen2-sliding-layer":
        assert config.sliding_window == 4 and config.layer_types[1] == "sliding_attention"
        assert pair.bridge.hf_model.model.layers[1].self_attn.sliding_window == 4
    else:
        assert config.sliding_window == 4
    check(pair)
