"""Architectures bridge knows a first-party plugin for, so errors can say what to install.

The tables must hold without the plugins installed (that is when the error needs them), so they are
written out here; ``core/tests/test_known.py`` checks them against every installed first-party adapter's
``architectures`` and ``model_types``. The set of first-party distributions is derived from them.
"""

from __future__ import annotations

ARCHITECTURE_PLUGINS: dict[str, str] = {
    **dict.fromkeys(
        [
            "GPT2LMHeadModel",
            "GPT2Model",
            "GPTNeoXForCausalLM",
            "GPTNeoXModel",
            "GPTBigCodeForCausalLM",
            "GPTBigCodeModel",
            "GPTNeoForCausalLM",
            "GPTNeoModel",
            "OPTForCausalLM",
            "OPTModel",
            "XGLMForCausalLM",
            "XGLMModel",
            "GPTJForCausalLM",
            "GPTJModel",
            "CodeGenForCausalLM",
            "CodeGenModel",
        ],
        "bridge-gpt2",
    ),
    **dict.fromkeys(
        [
            "LlamaForCausalLM",
            "MistralForCausalLM",
            "Qwen2ForCausalLM",
            "Qwen3ForCausalLM",
            "Gemma2ForCausalLM",
            "Gemma3ForCausalLM",
            "Phi3ForCausalLM",
            "Olmo2ForCausalLM",
            "MixtralForCausalLM",
            "GemmaForCausalLM",
            "GraniteForCausalLM",
            "OlmoForCausalLM",
            "Olmo3ForCausalLM",
            "SmolLM3ForCausalLM",
            "Starcoder2ForCausalLM",
            "PhiForCausalLM",
            "StableLmForCausalLM",
            "CohereForCausalLM",
            "Cohere2ForCausalLM",
            "Glm4ForCausalLM",
            "GlmForCausalLM",
            "Llama4ForCausalLM",
            "Glm4MoeForCausalLM",
            "OlmoeForCausalLM",
            "Qwen2MoeForCausalLM",
            "Qwen3MoeForCausalLM",
            "PhimoeForCausalLM",
            "GraniteMoeForCausalLM",
            "GptOssForCausalLM",
            "ApertusForCausalLM",
            "Ernie4_5ForCausalLM",
            "SeedOssForCausalLM",
            "NemotronForCausalLM",
            "Exaone4ForCausalLM",
            "PersimmonForCausalLM",
            "HunYuanDenseV1ForCausalLM",
            "HunYuanMoEV1ForCausalLM",
        ],
        "bridge-llama",
    ),
    **dict.fromkeys(["MambaForCausalLM", "MambaModel", "Mamba2ForCausalLM", "Mamba2Model"], "bridge-mamba"),
    **dict.fromkeys(["BloomForCausalLM", "MptForCausalLM", "FalconForCausalLM"], "bridge-alibi"),
    **dict.fromkeys(
        ["DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM", "GlmMoeDsaForCausalLM"],
        "bridge-mla",
    ),
    **dict.fromkeys(
        [
            "CLIPVisionModel",
            "CLIPVisionModelWithProjection",
            "CLIPForImageClassification",
            "CLIPModel",
            "SiglipVisionModel",
            "SiglipForImageClassification",
            "SiglipModel",
            "Siglip2VisionModel",
            "LlavaForConditionalGeneration",
            "Gemma3ForConditionalGeneration",
        ],
        "bridge-vision",
    ),
}

MODEL_TYPE_PLUGINS: dict[str, str] = {
    **dict.fromkeys(["gpt2", "gpt_neox", "gpt_bigcode", "gpt_neo", "opt", "xglm", "gptj", "codegen"], "bridge-gpt2"),
    **dict.fromkeys(
        [
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "gemma2",
            "gemma3_text",
            "phi3",
            "olmo2",
            "mixtral",
            "gemma",
            "granite",
            "olmo",
            "olmo3",
            "smollm3",
            "starcoder2",
            "phi",
            "stablelm",
            "cohere",
            "cohere2",
            "glm4",
            "glm",
            "llama4_text",
            "glm4_moe",
            "olmoe",
            "qwen2_moe",
            "qwen3_moe",
            "phimoe",
            "granitemoe",
            "gpt_oss",
            "apertus",
            "ernie4_5",
            "seed_oss",
            "nemotron",
            "exaone4",
            "persimmon",
            "hunyuan_v1_dense",
            "hunyuan_v1_moe",
        ],
        "bridge-llama",
    ),
    **dict.fromkeys(["mamba", "mamba2"], "bridge-mamba"),
    **dict.fromkeys(["bloom", "mpt", "falcon"], "bridge-alibi"),
    **dict.fromkeys(["deepseek_v2", "deepseek_v3", "deepseek_v32", "glm_moe_dsa"], "bridge-mla"),
    **dict.fromkeys(
        ["clip", "clip_vision_model", "siglip", "siglip_vision_model", "siglip2_vision_model", "llava", "gemma3"],
        "bridge-vision",
    ),
}


FIRST_PARTY = frozenset({*ARCHITECTURE_PLUGINS.values(), *MODEL_TYPE_PLUGINS.values()})


def plugin_for(architectures: list[str] | None, model_type: str | None) -> str | None:
    """The first-party distribution that would handle a model, if bridge knows one."""
    for name in architectures or []:
        if name in ARCHITECTURE_PLUGINS:
            return ARCHITECTURE_PLUGINS[name]
    return MODEL_TYPE_PLUGINS.get(model_type or "")
