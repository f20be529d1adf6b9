"""The conformance kit on every bridge-vision architecture, on both attention paths, fp32: outputs equal HF's
(no hooks, everything cached), ``hook_resid_post``/``hook_pattern`` equal HF's ``hidden_states``/eager
``attentions`` (per tower for two-tower models), head ablation at ``hook_z`` equals weight surgery on the
vision tower's output projection, backward hooks equal autograd, no dead hooks, no leaks, shapes."""

import pytest

from bridge.testing import ALL_CHECKS
from bridge_vision import ADAPTERS

CASES = [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures]


@pytest.mark.parametrize("path", ["native", "hooked"])
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("adapter", "architecture"), CASES, ids=[arch for _, arch in CASES])
def test_conformance(pair_for, adapter, architecture, check, path):
    check(pair_for(adapter, architecture, path))
