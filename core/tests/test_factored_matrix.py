"""``FactoredMatrix`` against dense matrices and ``torch.linalg``; composition scores against their formula."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.kernel.factored_matrix import FactoredMatrix, FactoredMatrixError, composition_scores


@pytest.fixture(autouse=True, scope="module")
def float64():
    """The algebra is exact: float64 keeps the tolerances meaningful (restored for other modules)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


dims = st.integers(1, 6)
leading = st.lists(st.integers(1, 3), max_size=2)


def factors(seed: int, lead: list[int], l: int, m: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, l, m, generator=generator), torch.randn(*lead, m, r, generator=generator)


def close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-9) -> None:
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), lead=leading, l=dims, m=dims, r=dims)
def test_products_transpose_and_svd_match_the_dense_matrix(seed, lead, l, m, r):
    a, b = factors(seed, lead, l, m, r)
    fm, dense = FactoredMatrix(a, b), a @ b
    assert fm.shape == dense.shape and fm.ndim == dense.ndim and (fm.ldim, fm.mdim, fm.rdim) == (l, m, r)
    close(fm.AB, dense)
    close(fm.T.AB, dense.transpose(-2, -1))
    u, s, v = fm.svd()
    close(u @ torch.diag_embed(s) @ v.transpose(-2, -1), dense)
    k = min(l, m, r)
    close(s[..., :k], torch.linalg.svdvals(dense)[..., :k])
    close(u.transpose(-2, -1) @ u, torch.eye(u.shape[-1]).expand_as(u.transpose(-2, -1) @ u), 1e-8)
    close(fm.norm(), torch.linalg.matrix_norm(dense))
    close(fm.collapse_l(), torch.diag_embed(s) @ v.transpose(-2, -1))
    close(fm.collapse_r(), u @ torch.diag_embed(s))
    close(fm.make_even().AB, dense)
    assert fm.Vh is fm.V  # TransformerLens's name for the right singular vectors
    close((fm * 2.5).AB, 2.5 * dense)
    close((3 * fm).AB, 3 * dense)
    close((fm * torch.tensor(0.5)).AB, 0.5 * dense)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), lead=leading, l=dims, m=dims, r=dims, n=dims)
def test_matmul_with_tensors_vectors_and_factored_matrices(seed, lead, l, m, r, n):
    a, b = factors(seed, lead, l, m, r)
    fm, dense = FactoredMatrix(a, b), a @ b
    generator = torch.Generator().manual_seed(seed + 1)
    right, left = torch.randn(r, n, generator=generator), torch.randn(n, l, generator=generator)
    close((fm @ right).AB, dense @ right)
    close((left @ fm).AB, left @ dense)
    vector_r, vector_l = torch.randn(r, generator=generator), torch.randn(l, generator=generator)
    close(fm @ vector_r, dense @ vector_r)
    close(vector_l @ fm, vector_l @ dense)
    other = FactoredMatrix(torch.randn(r, 2, generator=generator), torch.randn(2, n, generator=generator))
    close((fm @ other).AB, dense @ other.AB)
    before = FactoredMatrix(torch.randn(n, 3, generator=generator), torch.randn(3, l, generator=generator))
    close((before @ fm).AB, before.AB @ dense)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), lead=leading, d=st.integers(2, 7), m=st.integers(1, 4))
def test_eigenvalues_are_the_nonzero_eigenvalues_of_the_dense_matrix(seed, lead, d, m):
    m = min(m, d)
    a, b = factors(seed, lead, d, m, d)
    fm = FactoredMatrix(a, b)
    ours = fm.eigenvalues  # [..., m]
    dense = torch.linalg.eigvals(a @ b)  # [..., d]: ours plus d - m zeros
    for index in torch.cartesian_prod(*[torch.arange(n) for n in lead]).reshape(-1, len(lead)) if lead else [()]:
        index = tuple(int(i) for i in index)
        mine, theirs = ours[index], dense[index]
        for value in mine:  # each of ours is one of the dense ones
            assert (theirs - value).abs().min() < 1e-6
        largest = theirs[theirs.abs().argsort(descending=True)][:m]  # the dense ones beyond ours are ~0
        assert sorted(largest.abs().tolist()) == pytest.approx(sorted(mine.abs().tolist()), abs=1e-6)
        if d > m:
            assert theirs.abs().sort().values[: d - m].max() < 1e-6


def test_indexing_leading_rows_and_columns():
    a, b = factors(0, [2, 3], 5, 2, 4)
    fm, dense = FactoredMatrix(a, b), a @ b
    close(fm[1, 2].AB, dense[1, 2])
    close(fm[1].AB, dense[1])
    close(fm[:, 1].AB, dense[:, 1])
    close(fm[1, 2, 3].AB, dense[1, 2, 3:4])  # an integer row keeps its axis
    close(fm[1, 2, -1].AB, dense[1, 2, -1:])
    close(fm[1, 2, 1:3, 2].AB, dense[1, 2, 1:3, 2:3])
    close(fm[0, 0, :2, :3].AB, dense[0, 0, :2, :3])
    with pytest.raises(FactoredMatrixError, match="too many"):
        fm[0, 0, 0, 0, 0]
    assert len(fm) == 2


def test_shape_helpers():
    a, b = factors(1, [2], 5, 3, 4)
    fm = FactoredMatrix(a, b)
    assert fm.unsqueeze(0).shape == (1, 2, 5, 4)
    assert fm.pair == (fm.A, fm.B)
    close(fm.get_corner(2), (a @ b)[:2, :2, :2])
    broadcast = FactoredMatrix(torch.randn(3, 1, 5, 2), torch.randn(4, 2, 6))
    assert broadcast.shape == (3, 4, 5, 6) and broadcast.A.shape == (3, 4, 5, 2)


def test_bad_shapes_and_operands_say_what_is_wrong():
    with pytest.raises(FactoredMatrixError, match="must be tensors"):
        FactoredMatrix([[1.0]], torch.randn(1, 1))
    with pytest.raises(FactoredMatrixError, match="matrices"):
        FactoredMatrix(torch.randn(3), torch.randn(3, 1))
    with pytest.raises(FactoredMatrixError, match="A's last axis"):
        FactoredMatrix(torch.randn(3, 4), torch.randn(5, 2))
    with pytest.raises(FactoredMatrixError, match="do not broadcast"):
        FactoredMatrix(torch.randn(2, 3, 4), torch.randn(3, 4, 2))
    fm = FactoredMatrix(torch.randn(3, 2), torch.randn(2, 4))
    with pytest.raises(FactoredMatrixError, match="BA needs a square"):
        _ = fm.BA
    with pytest.raises(FactoredMatrixError, match="inner axes"):
        _ = fm @ torch.randn(3, 3)
    with pytest.raises(FactoredMatrixError, match="scalar"):
        _ = fm * torch.randn(2)


def _dense_composition(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(left @ right) / torch.linalg.matrix_norm(left) / torch.linalg.matrix_norm(right)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), d=st.integers(2, 8), m=st.integers(1, 3))
def test_composition_scores_are_the_dense_formula_for_every_pair(seed, d, m):
    generator = torch.Generator().manual_seed(seed)
    left = FactoredMatrix(torch.randn(2, 3, d, m, generator=generator), torch.randn(2, 3, m, d, generator=generator))
    right = FactoredMatrix(torch.randn(4, d, m, generator=generator), torch.randn(4, m, d, generator=generator))
    scores = composition_scores(left, right)
    assert scores.shape == (2, 3, 4)
    for i in range(2):
        for j in range(3):
            for k in range(4):
                close(scores[i, j, k], _dense_composition(left.AB[i, j], right.AB[k]), 1e-8)
    paired = composition_scores(left[:, 0], FactoredMatrix(right.A[:2], right.B[:2]), broadcast_dims=False)
    assert paired.shape == (2,)
    for i in range(2):
        close(paired[i], _dense_composition(left.AB[i, 0], right.AB[i]), 1e-8)
