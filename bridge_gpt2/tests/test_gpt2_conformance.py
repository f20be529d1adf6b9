"""The conformance kit on every bridge-gpt2 architecture, on both attention paths, fp32."""

from bridge.testing import conformance_test
from bridge_gpt2 import ADAPTERS

test_conformance = conformance_test(ADAPTERS)
