"""``refactor_factored_attn_matrices`` on BLOOM: a fused per-head q/k/v projection, ALiBi positions (added to the
scores, so each head's QK bilinear form is position-free and can be refactored)."""

from __future__ import annotations

import torch

import bridge
from bridge.testing import examples_of
from bridge.testing.fixtures import build_tiny_model, sensitize, tiny_tokenizer
from bridge_alibi import BloomAdapter

TOKENS = torch.tensor([[2, 5, 17, 42, 9, 77, 3, 11]])


def test_bloom_refactor_keeps_the_logits_and_the_circuits():
    hf = build_tiny_model(examples_of(BloomAdapter).example_config())
    sensitize(hf)
    model = bridge.wrap(hf, tiny_tokenizer())
    with torch.no_grad():
        before = hf(TOKENS).logits
    ov = model.OV.AB.detach().clone()
    model.enable_compatibility_mode(refactor_factored_attn_matrices=True)
    assert "refactor_factored_attn_matrices" in model.cfg.extra["weight_processing"]
    with torch.no_grad():
        after = hf(TOKENS).logits
    torch.testing.assert_close(torch.log_softmax(after, -1), torch.log_softmax(before, -1), atol=1e-4, rtol=0)
    assert torch.equal(model.b_V, torch.zeros_like(model.b_V))
    assert not torch.allclose(model.OV.AB, ov, atol=1e-3)  # folding the norms changed OV: the refactor ran after it
