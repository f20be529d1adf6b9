"""A matrix kept as the product of two factors, ``M = A @ B``, with TransformerLens's ``FactoredMatrix`` API.

``A`` is ``[..., ldim, mdim]`` and ``B`` ``[..., mdim, rdim]``; leading axes broadcast (layers, heads).
Circuits such as ``OV = W_V @ W_O`` are ``d_model × d_model`` but of rank ``d_head``: products, norms,
singular values and eigenvalues are computed through the thin factors, never the full matrix unless
asked for (``AB``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch

from bridge.kernel.errors import BridgeError

__all__ = ["FactoredMatrix", "FactoredMatrixError", "composition_scores"]

Scalar = int | float | torch.Tensor


class FactoredMatrixError(BridgeError, ValueError):
    """Factors or operands whose shapes do not fit; the message gives both shapes."""


def _swap(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-2, -1)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision values as float32 (torch's decompositions take float32 and float64 only)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class FactoredMatrix:
    """``M = A @ B`` without forming it: ``A`` ``[..., ldim, mdim]``, ``B`` ``[..., mdim, rdim]``.

    Attributes: ``A``, ``B`` (broadcast to the common leading shape), ``ldim``, ``mdim``, ``rdim``,
    ``shape`` (``[..., ldim, rdim]``), ``ndim``, ``has_leading_dims``.
    """

    def __init__(self, A: torch.Tensor, B: torch.Tensor) -> None:
        if not all(hasattr(x, "ndim") and hasattr(x, "shape") for x in (A, B)):
            raise FactoredMatrixError(
                f"A and B must be tensors; got {type(A).__name__} and {type(B).__name__} (wrap them with torch.tensor)"
            )
        if A.ndim < 2 or B.ndim < 2:
            raise FactoredMatrixError(f"both factors must be matrices (or stacks of them); got {A.shape}, {B.shape}")
        if A.shape[-1] != B.shape[-2]:
            raise FactoredMatrixError(
                f"A's last axis must equal B's second-to-last (A @ B); got A {tuple(A.shape)}, B {tuple(B.shape)}"
            )
        try:
            leading = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        except RuntimeError as error:
            raise FactoredMatrixError(
                f"the leading axes of A {tuple(A.shape)} and B {tuple(B.shape)} do not broadcast"
            ) from error
        self.ldim, self.mdim, self.rdim = A.shape[-2], A.shape[-1], B.shape[-1]
        self.A = A.broadcast_to((*leading, self.ldim, self.mdim))
        self.B = B.broadcast_to((*leading, self.mdim, self.rdim))
        self.shape = torch.Size((*leading, self.ldim, self.rdim))
        self.has_leading_dims = len(leading) > 0

    # ------------------------------------------------------------ products

    @property
    def AB(self) -> torch.Tensor:
        """The full matrix ``[..., ldim, rdim]`` (can be large)."""
        return self.A @ self.B

    @property
    def BA(self) -> torch.Tensor:
        """The reverse product ``[..., mdim, mdim]``; only defined when ``ldim == rdim``."""
        if self.ldim != self.rdim:
            raise FactoredMatrixError(f"BA needs a square matrix (ldim == rdim); this one is {tuple(self.shape)}")
        return self.B @ self.A

    @property
    def T(self) -> FactoredMatrix:
        """The transpose ``Mᵀ = Bᵀ Aᵀ``, still factored."""
        return FactoredMatrix(_swap(self.B), _swap(self.A))

    @property
    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)``."""
        return self.A, self.B

    def __matmul__(self, other: torch.Tensor | FactoredMatrix) -> FactoredMatrix | torch.Tensor:
        """``M @ other``: a factored matrix, or for a vector ``[rdim]`` a tensor ``[..., ldim]``."""
        if isinstance(other, FactoredMatrix):
            return (self @ other.A) @ other.B
        if not isinstance(other, torch.Tensor):
            return NotImplemented
        if other.ndim < 2:
            if other.shape[-1] != self.rdim:
                raise FactoredMatrixError(f"cannot multiply {tuple(self.shape)} by a vector of {tuple(other.shape)}")
            return (self.A @ (self.B @ other.unsqueeze(-1))).squeeze(-1)
        if other.shape[-2] != self.rdim:
            raise FactoredMatrixError(f"cannot multiply {tuple(self.shape)} @ {tuple(other.shape)}: inner axes differ")
        if self.rdim > self.mdim:  # keep the thinner middle
            return FactoredMatrix(self.A, self.B @ other)
        return FactoredMatrix(self.AB, other)

    def __rmatmul__(self, other: torch.Tensor | FactoredMatrix) -> FactoredMatrix | torch.Tensor:
        """``other @ M``: a factored matrix, or for a vector ``[ldim]`` a tensor ``[..., rdim]``."""
        if isinstance(other, FactoredMatrix):
            return other.A @ (other.B @ self)
        if not isinstance(other, torch.Tensor):
            return NotImplemented
        if other.shape[-1] != self.ldim:
            raise FactoredMatrixError(f"cannot multiply {tuple(other.shape)} @ {tuple(self.shape)}: inner axes differ")
        if other.ndim < 2:
            return ((other.unsqueeze(-2) @ self.A) @ self.B).squeeze(-2)
        if self.ldim > self.mdim:
            return FactoredMatrix(other @ self.A, self.B)
        return FactoredMatrix(other, self.AB)

    def __mul__(self, scalar: Scalar) -> FactoredMatrix:
        """``M * c`` for a scalar ``c`` (scales ``A``)."""
        if isinstance(scalar, torch.Tensor) and scalar.numel() != 1:
            raise FactoredMatrixError(
                f"* multiplies by a scalar; got a tensor of shape {tuple(scalar.shape)} (use @ for matrices)"
            )
        if not isinstance(scalar, int | float | torch.Tensor):
            return NotImplemented
        return FactoredMatrix(self.A * scalar, self.B)

    def __rmul__(self, scalar: Scalar) -> FactoredMatrix:
        return self * scalar

    # ------------------------------------------------------------ spectrum

    @cached_property
    def _svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # A = Ua Sa Vaᵀ, B = Ub Sb Vbᵀ, so M = Ua (Sa Vaᵀ Ub Sb) Vbᵀ: only the small middle needs an SVD.
        # Half-precision factors (bf16/fp16 models) are decomposed in float32 (torch has no half SVD).
        u_a, s_a, vh_a = torch.linalg.svd(_upcast(self.A), full_matrices=False)
        u_b, s_b, vh_b = torch.linalg.svd(_upcast(self.B), full_matrices=False)
        middle = s_a[..., :, None] * (vh_a @ u_b) * s_b[..., None, :]  # [..., k_a, k_b]
        u_m, s_m, vh_m = torch.linalg.svd(middle, full_matrices=False)
        return u_a @ u_m, s_m, _swap(vh_m @ vh_b)

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(U [..., ldim, k], S [..., k], V [..., rdim, k])`` with ``M = U @ diag(S) @ Vᵀ`` (computed once; in
        float32 for bf16/fp16 factors, as are ``S``, ``norm()`` and everything built on them)."""
        return self._svd

    @property
    def U(self) -> torch.Tensor:
        """Left singular vectors ``[..., ldim, k]``."""
        return self._svd[0]

    @property
    def S(self) -> torch.Tensor:
        """Singular values ``[..., k]``, descending."""
        return self._svd[1]

    @property
    def V(self) -> torch.Tensor:
        """Right singular vectors ``[..., rdim, k]`` (columns): ``M = U @ diag(S) @ Vᵀ``."""
        return self._svd[2]

    @property
    def Vh(self) -> torch.Tensor:
        """The same as ``V`` ``[..., rdim, k]``: TransformerLens's name for it, kept so its code runs unchanged.

        (For the conjugate transpose ``[..., k, rdim]`` use ``V.transpose(-2, -1)``.)
        """
        return self.V

    @property
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues ``[..., mdim]`` (complex) of ``M``'s nonzero part: those of ``BA``, which are
        ``M = AB``'s nonzero eigenvalues plus zeros (``BAv = λv ⇒ AB(Av) = λ(Av)``)."""
        return torch.linalg.eigvals(_upcast(self.BA))

    def norm(self) -> torch.Tensor:
        """Frobenius norm ``[...]``: the root of the sum of squared singular values."""
        return self.S.pow(2).sum(-1).sqrt()

    def collapse_l(self) -> torch.Tensor:
        """``diag(S) @ Vᵀ`` ``[..., k, rdim]``: ``M`` with its left orthogonal factor ``U`` dropped."""
        return self.S[..., :, None] * _swap(self.V)

    def collapse_r(self) -> torch.Tensor:
        """``U @ diag(S)`` ``[..., ldim, k]``: ``M`` with its right orthogonal factor dropped."""
        return self.U * self.S[..., None, :]

    def make_even(self) -> FactoredMatrix:
        """The same matrix as ``(U √S)(√S Vᵀ)``: both factors carry half of each singular value."""
        root = self.S.sqrt()
        return FactoredMatrix(self.U * root[..., None, :], root[..., :, None] * _swap(self.V))

    # ------------------------------------------------------------- shaping

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def unsqueeze(self, dim: int) -> FactoredMatrix:
        """A new leading axis of size 1 at ``dim`` (counted on the full shape; negative counts from the end)."""
        return FactoredMatrix(self.A.unsqueeze(dim), self.B.unsqueeze(dim))

    def __getitem__(self, index: Any) -> FactoredMatrix:
        """Index the leading axes (``OV[1, 3]``: layer 1, head 3); one more index selects rows (``ldim``),
        two more also columns (``rdim``). Integer row/column indices keep their axis."""
        index = index if isinstance(index, tuple) else (index,)
        n = sum(i is not None for i in index)
        n_leading = self.ndim - 2
        if n <= n_leading:
            return FactoredMatrix(self.A[index], self.B[index])
        if n == n_leading + 1:
            index = _keep_axis(index, -1)
            return FactoredMatrix(self.A[index], self.B[index[:-1]])
        if n == n_leading + 2:
            index = _keep_axis(_keep_axis(index, -1), -2)
            return FactoredMatrix(self.A[index[:-1]], self.B[(*index[:-2], slice(None), index[-1])])
        raise FactoredMatrixError(f"index {index} has too many entries for a FactoredMatrix of {tuple(self.shape)}")

    def get_corner(self, k: int = 3) -> torch.Tensor:
        """The top-left ``k × … × k`` corner of the full matrix (every axis cut to ``k``)."""
        corner = self.A[..., :k, :] @ self.B[..., :, :k]
        return corner[tuple(slice(k) for _ in range(corner.ndim))]

    def __repr__(self) -> str:
        return f"FactoredMatrix(shape={tuple(self.shape)}, mdim={self.mdim})"


def _keep_axis(index: tuple, position: int) -> tuple:
    """Replace an integer at ``position`` by a length-1 slice, so indexing keeps that axis."""
    value = index[position]
    if not isinstance(value, int):
        return index
    out = list(index)
    out[position] = slice(value, value + 1 if value != -1 else None)
    return tuple(out)


def composition_scores(left: FactoredMatrix, right: FactoredMatrix, broadcast_dims: bool = True) -> torch.Tensor:
    """How much ``left``'s output is read by ``right``: ``‖L R‖_F / (‖L‖_F ‖R‖_F)`` per pair.

    ``left`` ``[*l, d, d']``, ``right`` ``[*r, d', d'']``. With ``broadcast_dims`` the result is
    ``[*l, *r]`` (every left against every right); otherwise the leading axes broadcast together.
    """
    if broadcast_dims:
        n_left, n_right = left.ndim - 2, right.ndim - 2
        for i in range(n_left):
            right = right.unsqueeze(i)
        for i in range(n_right):
            left = left.unsqueeze(n_left + i)
    if left.rdim != right.ldim:
        raise FactoredMatrixError(
            f"composition needs left.rdim == right.ldim; got left {tuple(left.shape)}, right {tuple(right.shape)}"
        )
    l_core = left.collapse_l()  # [..., k_l, rdim]: same norms and products on the right as left
    r_core = right.collapse_r()  # [..., ldim, k_r]
    product = torch.linalg.matrix_norm(l_core @ r_core)
    return product / torch.linalg.matrix_norm(l_core) / torch.linalg.matrix_norm(r_core)
