"""The conformance kit on every bridge-alibi architecture and Falcon variant, on both paths, fp32.

Falcon-ALiBi is compared with an HF reference that adds the ALiBi bias once (HF's SDPA semantics,
which the bridge follows; see ``examples_of(FalconAdapter).reference_model``). The kit's head-ablation check
only recognises core's ``Attention`` and skips here; test_alibi_family.py runs the same check.
"""

from bridge.testing import conformance_test
from bridge_alibi import ADAPTERS

test_conformance = conformance_test(ADAPTERS)  # Falcon's variants come from its examples' conformance_configs()
