"""SAE splicing on the GPT-2 family, against the HF model with a plain torch hook doing the SAE's work."""

import pytest

from bridge.testing import make_pair
from bridge.testing.saes import check_sae_splice
from bridge_gpt2 import GPT2Adapter, GPTNeoXAdapter


@pytest.mark.parametrize(
    ("adapter", "hook_name", "module_path"),
    [
        (GPT2Adapter, "blocks.0.hook_mlp_out", "transformer.h.0.mlp"),
        (GPT2Adapter, "blocks.1.hook_resid_post", "transformer.h.1"),
        (GPTNeoXAdapter, "blocks.0.hook_resid_post", "gpt_neox.layers.0"),
    ],
)
def test_sae_splice_matches_hf_with_a_torch_hook(adapter, hook_name, module_path, tmp_path):
    check_sae_splice(make_pair(adapter, directory=tmp_path), hook_name, module_path)
