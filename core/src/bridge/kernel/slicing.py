"""``Slice``: one way to say which positions (or batch items, neurons…) to keep, as TransformerLens spells it.

The input forms, for a dimension of a tensor:

- ``None``: keep everything (the dimension stays);
- an ``int`` ``i``: index it (the dimension goes away), e.g. ``-1`` for the last position;
- a ``tuple`` ``(start, stop[, step])`` or a ``slice``: a range (the dimension stays);
- a ``list``, 1-D integer tensor or numpy array: those indices, in that order (the dimension stays).
"""

from __future__ import annotations

import operator
from typing import Any

import torch

from bridge.kernel.errors import BridgeError

#: What a ``Slice`` is built from (numpy integers and integer arrays work too).
SliceInput = int | tuple | slice | list | torch.Tensor | None


class Slice:
    """A position (or other) selection applied to one dimension of a tensor.

    ``Slice(-1).apply(x, dim=1)`` is ``x[:, -1]``; ``Slice((2, 5)).apply(x, dim=1)`` is ``x[:, 2:5]``;
    ``Slice([0, 3]).apply(x, dim=1)`` is ``x[:, [0, 3]]``; ``Slice(None)`` leaves ``x`` as it is.
    """

    def __init__(self, input_slice: SliceInput = None) -> None:
        if isinstance(input_slice, Slice):
            self.slice, self.mode = input_slice.slice, input_slice.mode
        elif input_slice is None:
            self.slice, self.mode = slice(None), "identity"
        elif isinstance(input_slice, bool):
            raise BridgeError(f"a slice cannot be a bool (got {input_slice!r}); pass an int, tuple, list or None")
        elif isinstance(input_slice, tuple):
            self.slice, self.mode = slice(*input_slice), "slice"
        elif isinstance(input_slice, slice):
            self.slice, self.mode = input_slice, "slice"
        elif _is_integer(input_slice):
            self.slice, self.mode = operator.index(input_slice), "int"
        elif isinstance(input_slice, list | torch.Tensor) or hasattr(input_slice, "__array__"):
            indices = torch.as_tensor(input_slice).cpu()
            if indices.ndim != 1 or indices.is_floating_point() or indices.dtype == torch.bool:
                raise BridgeError(
                    f"index-list slices must be 1-D integers, got shape {tuple(indices.shape)} of {indices.dtype}"
                )
            self.slice, self.mode = indices.long(), "array"
        else:
            raise BridgeError(
                f"cannot slice with {input_slice!r} ({type(input_slice).__name__}): pass None, an int, "
                "a (start, stop[, step]) tuple, a slice, or a list/tensor/array of indices"
            )

    @classmethod
    def unwrap(cls, slice_input: Slice | SliceInput) -> Slice:
        """``slice_input`` as a ``Slice`` (returned unchanged if it is one)."""
        return slice_input if isinstance(slice_input, Slice) else cls(slice_input)

    def apply(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """``tensor`` with this selection applied along ``dim`` (negative ``dim`` counts from the end)."""
        if self.mode == "identity":
            return tensor
        index: list = [slice(None)] * tensor.ndim
        index[dim] = self.slice.to(tensor.device) if self.mode == "array" else self.slice
        return tensor[tuple(index)]

    def indices(self, max_ctx: int | None = None) -> torch.Tensor:
        """The indices this selection keeps in a dimension of length ``max_ctx`` (needed unless it is an int)."""
        if self.mode == "int":
            return torch.tensor([self.slice])
        if max_ctx is None:
            raise BridgeError("Slice.indices needs max_ctx (the length of the dimension) unless it is an int")
        return torch.arange(max_ctx)[self.slice]

    def __repr__(self) -> str:
        return f"Slice({self.slice!r}, mode={self.mode!r})"


def _is_integer(value: Any) -> bool:
    """An int, numpy integer or 0-D integer tensor (anything with ``__index__``), but not a bool."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool
    try:
        operator.index(value)
    except TypeError:
        return False
    return True
