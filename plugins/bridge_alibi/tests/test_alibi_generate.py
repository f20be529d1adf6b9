"""``Bridge.generate`` on BLOOM, MPT and Falcon (ALiBi): the bias follows the cache, left padding
shifts it as HF does, and per-step caches stack to a full forward's."""

import pytest
import torch

from bridge.testing.generation import (
    GENERATION_CHECKS,
    check_every_hook_fires_each_step,
    lively_pair,
)
from bridge_alibi import ADAPTERS

ARCHS = [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures if not arch.endswith("Model")]
# MPT's bias is measured from the last key, so a cached step's scores are a full forward's shifted by
# a constant per row (the pattern is the same): compared separately below.
EXCLUDE = {"MptForCausalLM": ("hook_attn_scores",)}


@pytest.fixture(scope="module")
def lively_dirs(tmp_path_factory):
    return {arch: tmp_path_factory.mktemp(f"{arch}-lively") for _, arch in ARCHS}


@pytest.mark.parametrize("check", GENERATION_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("adapter", "arch"), ARCHS, ids=[arch for _, arch in ARCHS])
def test_generation(lively_dirs, adapter, arch, check):
    pair = lively_pair(adapter, lively_dirs[arch], arch)
    if check is check_every_hook_fires_each_step:
        check(pair, exclude=EXCLUDE.get(arch, ()))
    else:
        check(pair)


def test_mpt_cached_scores_differ_from_a_full_forward_by_a_constant_per_row(lively_dirs):
    adapter = next(a for a in ADAPTERS if "MptForCausalLM" in a.architectures)
    pair = lively_pair(adapter, lively_dirs["MptForCausalLM"], "MptForCausalLM")
    name, p = "blocks.0.attn.hook_attn_scores", 5
    tokens, steps = pair.bridge.generate(
        pair.tokens(2, p), max_new_tokens=4, do_sample=False, stop_at_eos=False, verbose=False, names_filter=name
    )
    _, full = pair.bridge.run_with_cache(tokens[:, :-1], names_filter=name)
    for i, step in enumerate(steps[1:], start=1):
        row = full[name][:, :, p + i - 1, : p + i]  # [b, h, keys]: the row of the new token
        shift = step[name][:, :, 0] - row
        torch.testing.assert_close(shift, shift[..., :1].expand_as(shift), atol=1e-4, rtol=0)
