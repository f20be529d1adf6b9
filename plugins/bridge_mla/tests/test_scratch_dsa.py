from bridge.testing import conformance_test
from bridge_mla import DeepseekV32Adapter, GlmMoeDsaAdapter
test_conformance = conformance_test((DeepseekV32Adapter, GlmMoeDsaAdapter))
