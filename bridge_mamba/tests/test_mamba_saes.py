"""SAE splicing on SSM mixer hooks and the residual stream, against the HF model with a plain torch hook."""

import pytest

from bridge.testing import make_pair
from bridge.testing.saes import check_sae_splice
from bridge_mamba import Mamba2Adapter, MambaAdapter


@pytest.mark.parametrize(
    ("adapter", "hook_name", "module_path"),
    [
        (MambaAdapter, "blocks.0.mixer.hook_in_proj", "backbone.layers.0.mixer.in_proj"),
        (MambaAdapter, "blocks.1.mixer.hook_x_proj", "backbone.layers.1.mixer.x_proj"),
        (Mamba2Adapter, "blocks.0.mixer.hook_in_proj", "backbone.layers.0.mixer.in_proj"),
        (MambaAdapter, "blocks.0.hook_resid_post", "backbone.layers.0"),
    ],
)
def test_sae_splice_matches_hf_with_a_torch_hook(adapter, hook_name, module_path, tmp_path):
    check_sae_splice(make_pair(adapter, directory=tmp_path), hook_name, module_path)
