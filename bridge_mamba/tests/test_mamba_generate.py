"""``Bridge.generate`` on Mamba 1/2: HF's ``generate`` carries the SSM state (``cache_params``); hooks,
steering, left padding and per-step caches behave as on attention models."""

import pytest
import torch

from bridge.testing.generation import GENERATION_CHECKS, check_every_hook_fires_each_step, lively_pair
from bridge_mamba import SSM_ADAPTERS as ADAPTERS

ARCHS = [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures if not arch.endswith("Model")]


@pytest.fixture(scope="module")
def lively_dirs(tmp_path_factory):
    return {arch: tmp_path_factory.mktemp(f"{arch}-lively") for _, arch in ARCHS}


@pytest.mark.parametrize("check", GENERATION_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("adapter", "arch"), ARCHS, ids=[arch for _, arch in ARCHS])
def test_generation(lively_dirs, adapter, arch, check):
    check(lively_pair(adapter, lively_dirs[arch], arch))


@pytest.mark.parametrize(("adapter", "arch"), ARCHS, ids=[arch for _, arch in ARCHS])
def test_opt_in_state_hook_is_recorded_on_every_step(lively_dirs, adapter, arch):
    pair = lively_pair(adapter, lively_dirs[arch], arch)
    pair.bridge.set_opt_in("hook_ssm_state", True)
    check_every_hook_fires_each_step(pair)
    _, steps = pair.bridge.generate(
        pair.tokens(1, 4),
        max_new_tokens=3,
        do_sample=False,
        stop_at_eos=False,
        verbose=False,
        names_filter="blocks.0.mixer.hook_ssm_state",
    )
    assert [s["blocks.0.mixer.hook_ssm_state"].shape[:2] for s in steps] == [(1, 4), (1, 1), (1, 1)]
    assert torch.isfinite(steps.stack()["blocks.0.mixer.hook_ssm_state"]).all()
