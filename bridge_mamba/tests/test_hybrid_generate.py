"""``Bridge.generate`` on every hybrid: HF's ``generate`` carries key/value caches for the attention layers and
conv/recurrent states for the others; greedy output equals HF's token for token, hooks (the recurrent-state hooks
included) fire on every step with the values of a full forward, steering and left padding behave as on
attention models."""

import pytest

from bridge.testing import check_state_hooks_each_step
from bridge.testing.generation import GENERATION_CHECKS, lively_pair
from bridge_mamba import HYBRID_ADAPTERS

ARCHS = [(adapter, arch) for adapter in HYBRID_ADAPTERS for arch in adapter.architectures]
CHECKS = (*GENERATION_CHECKS, check_state_hooks_each_step)


@pytest.fixture(scope="module")
def lively_dirs(tmp_path_factory):
    return {arch: tmp_path_factory.mktemp(f"{arch}-lively") for _, arch in ARCHS}


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("adapter", "arch"), ARCHS, ids=[arch for _, arch in ARCHS])
def test_generation(lively_dirs, adapter, arch, check):
    check(lively_pair(adapter, lively_dirs[arch], arch))
