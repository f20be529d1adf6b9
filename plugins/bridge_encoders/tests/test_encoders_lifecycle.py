"""Core's lifecycle kit on this family: one bridge per model for every architecture (a second wrap is
refused, copies and pickles are plain HF models, a dropped bridge gives the model back), hooked norms
bit-equal to HF's in bf16, and the hook-lifecycle state machine on BertAdapter.

The speech encoders are left out of the ownership check: their positional convolution is weight-normalized
through a torch parametrization, and torch refuses to pickle such a module (the bare HF model as much as a
bridged one); their bf16 norms are checked below."""

import pytest
import torch

from bridge.testing import check_hooked_norms_match_hf, lifecycle_tests
from bridge_encoders import ADAPTERS, BertAdapter, HubertAdapter, Wav2Vec2Adapter

SPEECH = (HubertAdapter, Wav2Vec2Adapter)

test_ownership, test_hooked_norms_bf16, test_lifecycle_machine = lifecycle_tests(
    [adapter for adapter in ADAPTERS if adapter not in SPEECH], machine=BertAdapter
)


@pytest.mark.parametrize("adapter", SPEECH, ids=lambda a: a.__name__)
def test_speech_hooked_norms_give_hf_bf16_output_bit_for_bit(adapter):
    check_hooked_norms_match_hf(adapter, dtype=torch.bfloat16)
