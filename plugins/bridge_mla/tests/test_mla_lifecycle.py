"""Core's lifecycle kit on this family: one bridge per model for every architecture (a second wrap is
refused, copies and pickles are plain HF models, a dropped bridge gives the model back), and the
hook-lifecycle state machine on one model."""

import pytest

from bridge.testing import check_lifecycle, check_ownership
from bridge_mla import ADAPTERS, DeepseekV2Adapter


@pytest.mark.parametrize(
    ("adapter", "architecture"),
    [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_each_model_is_owned_by_one_bridge(adapter, architecture):
    check_ownership(adapter, architecture)


def test_hook_lifecycle_state_machine():
    check_lifecycle(DeepseekV2Adapter, ownership=False)
