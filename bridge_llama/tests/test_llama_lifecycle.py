"""Core's lifecycle kit on this family: one bridge per model for every architecture (a second wrap is
refused, copies and pickles are plain HF models, a dropped bridge gives the model back), hooked norms
bit-equal to HF's in bf16, and the hook-lifecycle state machine on one model."""

import pytest
import torch

from bridge.testing import check_hooked_norms_match_hf, check_lifecycle, check_ownership
from bridge_llama import ADAPTERS, LlamaAdapter


@pytest.mark.parametrize(
    ("adapter", "architecture"),
    [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_each_model_is_owned_by_one_bridge(adapter, architecture):
    check_ownership(adapter, architecture)


@pytest.mark.parametrize(
    ("adapter", "architecture"),
    [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_hooked_norms_give_hf_bf16_output_bit_for_bit(adapter, architecture):
    check_hooked_norms_match_hf(adapter, architecture, dtype=torch.bfloat16)


def test_hook_lifecycle_state_machine():
    check_lifecycle(LlamaAdapter, ownership=False)
