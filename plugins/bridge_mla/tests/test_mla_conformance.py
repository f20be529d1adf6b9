"""The conformance kit on DeepSeek-V2 and V3 and two variants whose ``v_head_dim`` differs from
``qk_nope + qk_rope`` (as in the released models; the kit reads ``cfg.d_head_v``), and on DeepSeek-V3.2 and
GLM-MoE-DSA with their examples' real-checkpoint variants, both paths, fp32."""

import pytest

from bridge.testing import ALL_CHECKS, conformance_test
from bridge_mla import DeepseekV32Adapter, GlmMoeDsaAdapter

NAMES = ["DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "deepseek-v2-variant", "deepseek-v3-variant"]

test_dsa_conformance = conformance_test((DeepseekV32Adapter, GlmMoeDsaAdapter))


@pytest.mark.parametrize("path", ["native", "hooked"])
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", NAMES)
def test_conformance(pair_for, name, check, path):
    check(pair_for(name, path))
