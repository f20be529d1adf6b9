"""The conformance kit on every bridge-encoders architecture, on both attention paths, fp32."""

from bridge.testing import conformance_test
from bridge_encoders import ADAPTERS

test_conformance = conformance_test(ADAPTERS)
