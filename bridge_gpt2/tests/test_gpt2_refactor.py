"""``refactor_factored_attn_matrices`` on the family's layouts: separate q/k/v projections with biases (OPT), a
fused per-head projection with rotary positions (NeoX, refused)."""

from __future__ import annotations

import pytest
import torch

import bridge
from bridge.analysis.norm_readers import WeightProcessingError
from bridge.testing import examples_of
from bridge.testing.fixtures import build_tiny_model, sensitize, tiny_tokenizer
from bridge_gpt2 import GPTNeoXAdapter, OPTAdapter

TOKENS = torch.tensor([[2, 5, 17, 42, 9, 77, 3, 11]])


def load(adapter) -> bridge.Bridge:
    hf = build_tiny_model(examples_of(adapter).example_config())
    sensitize(hf)
    return bridge.wrap(hf, tiny_tokenizer())


def test_opt_refactor_keeps_the_logits_and_makes_W_O_a_rotation():
    model = load(OPTAdapter)
    with torch.no_grad():
        before = model.hf_model(TOKENS).logits
    ov = model.OV.AB.detach().clone()
    model.process_weights(False, False, False, False, refactor_factored_attn_matrices=True)
    with torch.no_grad():
        torch.testing.assert_close(model.hf_model(TOKENS).logits, before, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.OV.AB, ov, atol=1e-4, rtol=0)
    w_o = model.W_O  # [layers, heads, d_head, d_model]
    eye = torch.eye(w_o.shape[-2]).expand(*w_o.shape[:2], -1, -1)
    torch.testing.assert_close(w_o @ w_o.transpose(-2, -1), eye, atol=1e-5, rtol=0)


def test_neox_refactor_is_refused_for_rotary_positions():
    model = load(GPTNeoXAdapter)
    before = [p.detach().clone() for p in model.hf_model.parameters()]
    with pytest.raises(WeightProcessingError, match="rotary"):
        model.process_weights(refactor_factored_attn_matrices=True)
    assert all(torch.equal(p, q) for p, q in zip(model.hf_model.parameters(), before, strict=True))
