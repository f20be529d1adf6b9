"""SAE splicing on the ALiBi family, against the HF model with a plain torch hook doing the SAE's work."""

import pytest

from bridge.testing import make_pair
from bridge.testing.saes import check_sae_splice
from bridge_alibi import BloomAdapter, FalconAdapter, MptAdapter


@pytest.mark.parametrize(
    ("adapter", "hook_name", "module_path"),
    [
        (BloomAdapter, "blocks.0.hook_resid_post", "transformer.h.0"),
        (MptAdapter, "blocks.1.hook_resid_post", "transformer.blocks.1"),
        (FalconAdapter, "blocks.0.hook_resid_post", "transformer.h.0"),
    ],
)
def test_sae_splice_matches_hf_with_a_torch_hook(adapter, hook_name, module_path, tmp_path):
    check_sae_splice(make_pair(adapter, directory=tmp_path), hook_name, module_path)
