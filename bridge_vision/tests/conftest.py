import pytest
import torch

from bridge.kernel.plugins import get_registry
from bridge.testing import make_pair
from bridge_vision import ADAPTERS
from bridge_vision.testing import save_example_model, save_example_vlm
from bridge_vision.vlm_examples import ANYRES_CASES, QWEN_CASES, VLM_CASES

# Tiny models gain nothing from intra-op threads; on a shared 2-core machine they only slow backward passes.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """One saved tiny model (with its image processor) per architecture, shared by the session."""
    cases = [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures]
    return {arch: save_example_model(adapter, arch, tmp_path_factory.mktemp(arch)) for adapter, arch in cases}


@pytest.fixture
def pair_for(model_dirs):
    def build(adapter, architecture, path="native"):
        return make_pair(adapter, architecture, path, directory=model_dirs[architecture])

    return build


ALL_VLM_CASES = {**VLM_CASES, **ANYRES_CASES, **QWEN_CASES}


def needs_language_plugins() -> None:
    missing = {"llama", "qwen2", "qwen3", "mistral", "gemma3_text"} - set(get_registry().by_model_type)
    if missing:
        pytest.skip(f"the language models' plugin (bridge-llama) is not installed: no adapter for {sorted(missing)}")


@pytest.fixture(scope="session")
def vlm_dirs(tmp_path_factory):
    """One saved tiny vision-language model (tokenizer with the image token, image processor, LLaVA's processor)
    per case, saved on first use."""
    saved = {}

    def directory(case: str):
        needs_language_plugins()
        if case not in saved:
            adapter, config = ALL_VLM_CASES[case]
            saved[case] = save_example_vlm(adapter, tmp_path_factory.mktemp(case), config)
        return saved[case]

    return directory


@pytest.fixture
def vlm_pair(vlm_dirs):
    def build(case: str, path: str = "native"):
        return make_pair(ALL_VLM_CASES[case][0], path=path, directory=vlm_dirs(case))

    return build


_FLAT = (
    "the flattened image tower runs HF's modules on [n_patches, d] with no batch axis, and the kit's per-head "
    "projection and gradient references assume [b, p, d]: an extension of the kit, not a wrong hook"
)
_DROPOUT = "under dropout 0.1 the logits differ from HF's (at 0 they agree): the draw order in the tower, open"
#: Kit checks that fail on these models today, each for the reason given; strict, so a fix turns them red.
KNOWN_FAILURES = {
    **{
        f"test_vlm_conformance[{m}-{p}-check_gradients]": _FLAT
        for m in ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")
        for p in ("native", "hooked")
    },
    **{f"test_vlm_conformance[{m}-native-check_projections]": _FLAT for m in ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")},
    **{f"test_vlm_conformance[{m}-native-check_train_mode]": _DROPOUT for m in ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")},
    "test_vlm_conformance[internvl-native-check_hooks_match_hf]": "InternViT's q/k norms have no hook_q/k_normed yet",
    "test_vlm_conformance[internvl-native-check_implied_hooks]": "InternViT's q/k norms have no hook_q/k_normed yet",
    "test_vlm_conformance[paligemma-native-check_attention_algebra]": (
        "PaliGemma counts positions from 1: position 0, where the kit takes rotary to be the identity, is rotated"
    ),
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.name in KNOWN_FAILURES:
            item.add_marker(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[item.name]))
