"""SAE splicing on MLA latents and the residual stream, against the HF model with a plain torch hook."""

import pytest

from bridge.testing import make_pair
from bridge.testing.saes import check_sae_splice
from bridge_mla import DeepseekV2Adapter, DeepseekV3Adapter


@pytest.mark.parametrize(
    ("adapter", "hook_name", "module_path"),
    [
        (DeepseekV2Adapter, "blocks.0.attn.hook_kv_latent", "model.layers.0.self_attn.kv_a_layernorm"),
        (DeepseekV3Adapter, "blocks.1.attn.hook_q_latent", "model.layers.1.self_attn.q_a_layernorm"),
        (DeepseekV3Adapter, "blocks.0.hook_resid_post", "model.layers.0"),
    ],
)
def test_sae_splice_matches_hf_with_a_torch_hook(adapter, hook_name, module_path, tmp_path):
    check_sae_splice(make_pair(adapter, directory=tmp_path), hook_name, module_path)
