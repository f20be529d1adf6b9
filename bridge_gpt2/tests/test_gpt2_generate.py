"""``Bridge.generate`` on GPT-2, GPT-NeoX (partial rotary, parallel residual) and BigCode (multi-query):
HF's greedy ``generate``, steering against a cache-free reference loop, left padding, per-step caches."""

import pytest

from bridge.testing.generation import GENERATION_CHECKS, LIVELY_INIT, lively_pair
from bridge_gpt2 import ADAPTERS

ARCHS = [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures if not arch.endswith("Model")]


@pytest.fixture(scope="module")
def lively_dirs(tmp_path_factory):
    return {arch: tmp_path_factory.mktemp(f"{arch}-lively") for _, arch in ARCHS}


@pytest.mark.parametrize("check", GENERATION_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("adapter", "arch"), ARCHS, ids=[arch for _, arch in ARCHS])
def test_generation(lively_dirs, adapter, arch, check):
    # OPT's greedy continuation repeats itself at every init from 0.3 to 1.0 with the tiny tokenizer's special ids
    init = 0.1 if arch == "OPTForCausalLM" else LIVELY_INIT
    check(lively_pair(adapter, lively_dirs[arch], arch, init=init))
