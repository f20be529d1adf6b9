"""``Bridge.generate`` on DeepSeek V2/V3/V3.2 and GLM-MoE-DSA (MLA): the cache holds latents (and, for DSA, the
indexer's keys), so ``hook_k`` (the per-head pre-rotary key) refuses a cached forward; every other hook fires on every
step."""

import pytest

from bridge.kernel.errors import BridgeError
from bridge.testing.generation import GENERATION_CHECKS, check_every_hook_fires_each_step, lively_pair
from bridge_mla import ADAPTERS

ARCHS = [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures]


@pytest.fixture(scope="module")
def lively_dirs(tmp_path_factory):
    return {arch: tmp_path_factory.mktemp(f"{arch}-lively") for _, arch in ARCHS}


@pytest.mark.parametrize("check", GENERATION_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("adapter", "arch"), ARCHS, ids=[arch for _, arch in ARCHS])
def test_generation(lively_dirs, adapter, arch, check):
    pair = lively_pair(adapter, lively_dirs[arch], arch)
    if check is check_every_hook_fires_each_step:
        # hook_topk_indices: a query with fewer earlier keys than index_topk fills its last slots with masked keys,
        # picked among ties that depend on how many keys the call sees (test_mla_dsa checks the chosen keys per step)
        check(pair, exclude=("attn.hook_k", "attn.hook_topk_indices"))
    else:
        check(pair)


@pytest.mark.parametrize(("adapter", "arch"), ARCHS, ids=[arch for _, arch in ARCHS])
def test_hook_k_needs_generation_without_the_cache(lively_dirs, adapter, arch):
    pair = lively_pair(adapter, lively_dirs[arch], arch)
    kwargs = {"max_new_tokens": 3, "do_sample": False, "stop_at_eos": False, "verbose": False}
    with pytest.raises(BridgeError, match="KV cache"):
        pair.bridge.generate(pair.tokens(1, 4), names_filter="blocks.0.attn.hook_k", **kwargs)
    _, steps = pair.bridge.generate(
        pair.tokens(1, 4), names_filter="blocks.0.attn.hook_k", use_past_kv_cache=False, **kwargs
    )
    assert [s["k", 0].shape[1] for s in steps] == [4, 5, 6]
