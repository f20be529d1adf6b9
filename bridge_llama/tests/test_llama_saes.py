"""SAE splicing on the Llama family, against the HF model with a plain torch hook doing the SAE's work."""

import pytest

from bridge.testing import make_pair
from bridge.testing.saes import check_sae_splice
from bridge_llama import LlamaAdapter, MixtralAdapter


@pytest.mark.parametrize(
    ("adapter", "hook_name", "module_path"),
    [
        (LlamaAdapter, "blocks.0.hook_resid_post", "model.layers.0"),
        (LlamaAdapter, "blocks.1.hook_mlp_out", "model.layers.1.mlp"),
        (MixtralAdapter, "blocks.0.hook_resid_post", "model.layers.0"),
    ],
)
def test_sae_splice_matches_hf_with_a_torch_hook(adapter, hook_name, module_path, tmp_path):
    check_sae_splice(make_pair(adapter, directory=tmp_path), hook_name, module_path)
