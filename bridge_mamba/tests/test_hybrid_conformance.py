"""The conformance kit on every hybrid (attention layers between SSM, convolution or linear-attention layers),
on both attention paths."""

from bridge.testing import conformance_test
from bridge_mamba import HYBRID_ADAPTERS

test_conformance = conformance_test(HYBRID_ADAPTERS)
