"""``FactoredMatrix`` on bf16/fp16 factors (a model loaded in half precision): singular values, the SVD, norms and
composition scores are computed in float32, as ``eigenvalues`` already is.

Reference: the same quantities of the float32 copy of the same (half-precision) factors, and for the model, the
full matrix's singular values from ``torch.linalg.svdvals`` in float64."""

import pytest
import torch

import bridge
from bridge.kernel.factored_matrix import FactoredMatrix


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_spectrum_of_half_precision_factors(dtype):
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 16, 4, generator=generator).to(dtype)
    b = torch.randn(3, 4, 12, generator=generator).to(dtype)
    half, full = FactoredMatrix(a, b), FactoredMatrix(a.float(), b.float())
    u, s, v = half.svd()
    assert s.dtype == u.dtype == v.dtype == torch.float32
    torch.testing.assert_close(s, full.S, atol=1e-5, rtol=1e-5)  # the same float32 computation
    torch.testing.assert_close(u @ torch.diag_embed(s) @ v.transpose(-2, -1), full.AB, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(half.norm(), full.norm(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(half.make_even().AB, full.AB, atol=1e-4, rtol=1e-4)
    expected = torch.linalg.svdvals(a.double() @ b.double())[..., :4].float()
    torch.testing.assert_close(half.S, expected, atol=1e-4, rtol=1e-4)


def test_circuits_and_composition_scores_of_a_bf16_model(gpt2_dir):
    model = bridge.load(gpt2_dir, dtype=torch.bfloat16)
    full = bridge.load(gpt2_dir)
    norms = model.QK.norm()  # [n_layers, n_heads]
    assert norms.dtype == torch.float32
    qk = (model.W_Q.float() @ model.W_K.float().transpose(-2, -1)).double()  # [L, H, d_model, d_model]
    torch.testing.assert_close(norms.double(), torch.linalg.matrix_norm(qk), atol=1e-4, rtol=1e-4)
    for mode in ("Q", "K", "V"):
        scores = model.all_composition_scores(mode)
        assert scores.shape == (2, 4, 2, 4) and scores.dtype == torch.float32
        torch.testing.assert_close(scores, full.all_composition_scores(mode), atol=2e-2, rtol=0)  # bf16 weights
