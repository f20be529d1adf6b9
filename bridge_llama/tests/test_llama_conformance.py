"""The conformance kit on every bridge-llama architecture, on both attention paths, fp32; and the hybrid checks
(layer kinds, recurrent states against HF step by step, state patching) on MiniMax's lightning layers."""

from bridge.testing import HYBRID_CHECKS, conformance_test
from bridge_llama import ADAPTERS, MiniMaxAdapter

test_conformance = conformance_test(ADAPTERS)

test_hybrid_checks = conformance_test([MiniMaxAdapter], paths=("native",), checks=HYBRID_CHECKS)
