"""Core's lifecycle kit on this family: one bridge per model for every architecture (a second wrap is
refused, copies and pickles are plain HF models, a dropped bridge gives the model back), hooked norms
bit-equal to HF's in bf16, and the hook-lifecycle state machine on MambaAdapter."""

from bridge.testing import lifecycle_tests
from bridge_mamba import SSM_ADAPTERS as ADAPTERS
from bridge_mamba import MambaAdapter

test_ownership, test_hooked_norms_bf16, test_lifecycle_machine = lifecycle_tests(
    ADAPTERS, machine=MambaAdapter, max_examples=20
)
