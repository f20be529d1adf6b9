"""The conformance kit on every hybrid (attention layers between SSM, convolution or linear-attention layers),
on both attention paths."""

from bridge.testing import conformance_test
from bridge_mamba import HYBRID_ADAPTERS

test_conformance = conformance_test(HYBRID_ADAPTERS)

from bridge.testing import HYBRID_CHECKS  # noqa: E402
from bridge_mamba import SSM_ADAPTERS  # noqa: E402

test_hybrid_checks = conformance_test([*SSM_ADAPTERS, *HYBRID_ADAPTERS], paths=("native",), checks=HYBRID_CHECKS)
