"""The conformance kit on config switches the published Gemma 1, Granite, OLMo, OLMo-3, SmolLM3 and StarCoder2
checkpoints use and the example configs do not (tiny sizes, real switches)."""

import pytest

from bridge.testing import ALL_CHECKS, examples_of, make_pair, save_tiny_model
from bridge_llama import (
    GemmaAdapter,
    GraniteAdapter,
    Olmo3Adapter,
    OlmoAdapter,
    SmolLM3Adapter,
    Starcoder2Adapter,
)

pytestmark = pytest.mark.variants

OLMO3_YARN = {  # Olmo-3 7B: YaRN on the full-attention layers only
    "rope_type": "yarn",
    "rope_theta": 500_000.0,
    "factor": 8.0,
    "original_max_position_embeddings": 8,
    "attention_factor": 1.2079441541679836,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
}
VARIANTS = {
    # gemma-2b: multi-query attention, the legacy hidden_act="gelu" (HF turns it into the tanh approximation)
    "gemma-2b-style": (GemmaAdapter, {"num_key_value_heads": 1, "head_dim": 16, "hidden_act": "gelu"}),
    # gemma-7b: multi-head, head_dim 256 ≠ 3072 / 16
    "gemma-7b-style": (GemmaAdapter, {"num_key_value_heads": 4, "head_dim": 32}),
    # granite-3.x: tied embeddings, the published score scale 1/64
    "granite-3-style": (GraniteAdapter, {"tie_word_embeddings": True, "attention_multiplier": 0.015625}),
    # OLMo-1B-hf: no clip_qkv, tied embeddings
    "olmo-1b-style": (OlmoAdapter, {"clip_qkv": None, "tie_word_embeddings": True}),
    # OLMo-7B-0424-hf: clip_qkv with multi-head attention
    "olmo-0424-style": (OlmoAdapter, {"num_key_value_heads": 4}),
    # Olmo-3 7B: three sliding layers to one full, YaRN on the full ones
    "olmo3-7b-style": (
        Olmo3Adapter,
        {
            "num_hidden_layers": 4,
            "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 500_000.0},
                "full_attention": OLMO3_YARN,
            },
        },
    ),
    # SmolLM3-3B: RoPE off in every fourth layer, tied embeddings
    "smollm3-3b-style": (
        SmolLM3Adapter,
        {
            "num_hidden_layers": 4,
            "no_rope_layers": [1, 1, 1, 0],
            "layer_types": ["full_attention"] * 4,
            "tie_word_embeddings": True,
        },
    ),
    # starcoder2-3b: tied embeddings
    "starcoder2-3b-style": (Starcoder2Adapter, {"tie_word_embeddings": True}),
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
    adapter, changes = VARIANTS[variant]
    pair = make_pair(adapter, path=path, directory=variant_dirs[variant])
    config = pair.bridge.hf_model.config
    for key, value in changes.items():  # the switch reached the saved model
        if key == "hidden_act":
            assert config.hidden_act == "gelu_pytorch_tanh"
        elif key == "rope_parameters":
            assert config.rope_parameters["full_attention"]["rope_type"] == "yarn"
        else:
            assert getattr(config, key) == value, key
    check(pair)
