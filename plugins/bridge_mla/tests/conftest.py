import pytest
import torch

from bridge.testing import examples_of, make_pair, save_tiny_model
from bridge_mla import DeepseekV2Adapter, DeepseekV3Adapter, DeepseekV32Adapter, GlmMoeDsaAdapter

#: Adapters by architecture name (the family's four).
BY_ARCH = {a.architectures[0]: a for a in (DeepseekV2Adapter, DeepseekV3Adapter, DeepseekV32Adapter, GlmMoeDsaAdapter)}

# Tiny models gain nothing from intra-op threads; on a shared 2-core machine they only slow backward passes.
torch.set_num_threads(1)

# Variants beyond the example configs, with v_head_dim != qk_nope + qk_rope as in the released models:
# V2 with q-LoRA, greedy routing and a dense first layer; V3 without rope interleaving, unnormalised
# routing weights and a non-zero expert-score correction bias.
VARIANTS = {
    "deepseek-v2-variant": (
        DeepseekV2Adapter,
        dict(q_lora_rank=24, topk_method="greedy", first_k_dense_replace=1, v_head_dim=12),
    ),
    "deepseek-v3-variant": (
        DeepseekV3Adapter,
        dict(rope_interleave=False, norm_topk_prob=False, qk_nope_head_dim=16, v_head_dim=8),
    ),
}


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """One saved tiny model per architecture and variant, shared by the session."""
    dirs = {arch: tmp_path_factory.mktemp(arch) for arch in BY_ARCH}
    for name, (adapter, overrides) in VARIANTS.items():
        directory = tmp_path_factory.mktemp(name)
        model_config = examples_of(adapter).example_config(**overrides)
        save_tiny_model(model_config, directory)
        if name == "deepseek-v3-variant":
            _randomize_correction_bias(directory)
        dirs[name] = directory
    return dirs


def _randomize_correction_bias(directory):
    """HF initialises ``e_score_correction_bias`` to zeros; give it values so routing tests see it."""
    import transformers

    model = transformers.DeepseekV3ForCausalLM.from_pretrained(directory)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in model.model.layers:
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None:
                gate.e_score_correction_bias.copy_(
                    0.05 * torch.randn(gate.e_score_correction_bias.shape, generator=generator)
                )
    model.save_pretrained(directory)


@pytest.fixture
def pair_for(model_dirs):
    """``pair_for(name, path)``: a conformance pair for an architecture name or a variant name."""

    def build(name, path="native"):
        if name in VARIANTS:
            adapter = VARIANTS[name][0]
            return make_pair(adapter, adapter.architectures[0], path, directory=model_dirs[name])
        return make_pair(BY_ARCH[name], name, path, directory=model_dirs[name])

    return build


_INDEX_SCORES = (
    "hook_index_scores is [b, query, key] over the padded keys; the kit's alone-vs-batch comparison cuts the "
    "padding off the queries but not the keys: an extension of the kit, open"
)
#: Kit checks that fail on these models today; strict, so a fix turns them red.
KNOWN_FAILURES = {
    f"test_dsa_conformance[{m}-native-check_left_padded_batches]": _INDEX_SCORES
    for m in ("DeepseekV32ForCausalLM", "GlmMoeDsaForCausalLM")
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.name in KNOWN_FAILURES:
            item.add_marker(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[item.name]))
