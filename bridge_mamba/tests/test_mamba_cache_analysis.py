"""Cache analysis on SSM blocks: the residual stream is embeddings plus each block's mixer output."""

import pytest
import torch

from bridge import BridgeError
from bridge_mamba import SSM_ADAPTERS as ADAPTERS


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.__name__)
def test_ssm_stream_decomposes_into_mixer_outputs(pair_for, adapter):
    pair = pair_for(adapter)
    tokens = pair.tokens(2, 6)
    _, cache = pair.bridge.run_with_cache(tokens)
    ref = pair.reference(tokens)
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels == ["embed", "0_ssm_out", "1_ssm_out"]
    close(stack.sum(0), cache["resid_post", -1])
    close(cache.decompose_resid(1).sum(0), cache["resid_pre", 1])
    norm_f = pair.reference.backbone.norm_f
    lens = cache.accumulated_resid(apply_ln=True)
    close(lens[-1] @ pair.bridge.W_U, ref.logits, atol=1e-4)
    normalized = cache.apply_ln_to_stack(cache.accumulated_resid()[-1:])[0]  # cached scale, no weight
    close(normalized * norm_f.weight @ pair.bridge.W_U, ref.logits, atol=1e-4)
    # the mixer reads its block's norm: apply_ln at a block uses that norm's scale (RMS: no centering)
    one = cache.apply_ln_to_stack(stack[:2], 1)
    close(one, stack[:2] / cache["blocks.1.norm.hook_scale"])


@pytest.mark.parametrize("adapter", ADAPTERS[:1], ids=lambda a: a.__name__)
def test_ssm_blocks_refuse_head_neuron_and_mlp_analyses_clearly(pair_for, adapter):
    pair = pair_for(adapter)
    _, cache = pair.bridge.run_with_cache(pair.tokens(1, 4))
    with pytest.raises(BridgeError, match=r"block 0 has no attention \(it writes mixer.hook_ssm_out\)"):
        cache.stack_head_results()
    with pytest.raises(BridgeError, match="no attention"):
        cache.compute_head_results()
    with pytest.raises(BridgeError, match=r"block 0 has no MLP"):
        cache.get_neuron_results(0)
    with pytest.raises(BridgeError, match=r"mlp_input.*no MLP"):
        cache.decompose_resid(1, mlp_input=True)
    with pytest.raises(BridgeError, match=r"ssm_out.*neither attention nor MLP.*mode='all'"):
        cache.decompose_resid(mode="attn")
