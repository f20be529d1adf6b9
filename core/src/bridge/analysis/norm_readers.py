"""Which weights read a norm's output, found by running the model once and watching its tensors.

Folding a norm's weight and bias into the layers after it is exact only if weight matrices are all
that read its output. One forward pass on a few tokens records, for each norm asked about:

- the HF modules that receive its output (or a reshape, gather or cast of it) as an input; the
  innermost of them are its *readers*, and each must be a kind whose input weight is known:
  ``nn.Linear``, HF's ``Conv1D``, an MoE router (a 2-D ``weight`` applied as a linear map) or an HF
  experts module (3-D ``gate_up_proj``/``up_proj``, laid out as its ``is_transposed`` flag says);
- every torch operation that touches its output. Reshapes, gathers, casts, shape queries and matrix
  products are fine; anything else (the residual addition after a post-norm, say) makes it unfoldable.

No family knowledge is needed: the HF code itself shows where each norm's output goes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from transformers.pytorch_utils import Conv1D

from bridge.kernel.errors import BridgeError


class WeightProcessingError(BridgeError):
    """Weight processing was asked for something it cannot do exactly on this model."""


#: Operations that keep the feature axis and only move, select or cast values: their result is still
#: "the norm's output" for the purpose of finding its readers.
_PASS_THROUGH = frozenset(
    {
        "view", "reshape", "flatten", "unflatten", "contiguous", "__getitem__", "index_select",
        "to", "type", "float", "half", "bfloat16", "double", "detach", "clone",
        "unsqueeze", "squeeze", "expand", "view_as", "reshape_as", "expand_as", "dropout", "type_as",
    }
)  # fmt: skip
#: Operations whose arguments after the first are read for their dtype only (``x.type_as(norm_output)``).
_DTYPE_OF_OTHERS = frozenset({"type_as"})
#: Operations that read only the shape, dtype or device of their input.
_SHAPE_ONLY = frozenset(
    {"zeros_like", "ones_like", "empty_like", "full_like", "new_zeros", "new_ones", "new_empty", "new_full"}
)
#: Multiplications: by a Python number they commute with the readers' weights (Falcon-H1's µP multipliers
#: between a norm and its projections), so the result is still the norm's output, scaled (bias-free norms only).
_SCALINGS = frozenset({"mul", "__mul__", "__rmul__", "mul_"})
#: Matrix products: a weight reading the norm's output (its module is found by the module trace).
_PRODUCTS = frozenset({"linear", "addmm", "matmul", "__matmul__", "mm", "bmm", "baddbmm", "_grouped_mm", "grouped_mm"})


@dataclass(frozen=True)
class Reader:
    """A weight that reads a norm's output: ``getattr(module, weight)``, input features on ``axis``.

    ``bias`` names the module's bias slot for that weight (it may hold ``None``), or is ``None`` when
    the module has no such slot.
    """

    path: str
    module: nn.Module
    weight: str
    axis: int
    bias: str | None

    @property
    def parameter(self) -> nn.Parameter:
        return getattr(self.module, self.weight)


def reader_of(module: nn.Module, path: str, d_model: int) -> Reader | None:
    """The input weight of a module that reads ``[..., d_model]`` activations, if it is a kind we know."""
    if isinstance(module, Conv1D):  # weight [d_in, d_out]
        return Reader(path, module, "weight", 0, "bias")
    if isinstance(module, nn.Linear):  # weight [d_out, d_in]
        return Reader(path, module, "weight", 1, "bias")
    params = module._parameters
    for name in ("gate_up_proj", "up_proj"):  # HF experts: [E, d_out, d_in], or [E, d_in, d_out] if transposed
        weight = params.get(name)
        if weight is not None and weight.ndim == 3:
            axis = 1 if getattr(module, "is_transposed", False) else 2
            if weight.shape[axis] == d_model:
                return Reader(path, module, name, axis, f"{name}_bias" if f"{name}_bias" in params else None)
    weight = params.get("weight")
    others = [p for n, p in params.items() if n != "weight" and p is not None]
    if weight is not None and weight.ndim == 2 and weight.shape[1] == d_model and all(p.ndim == 1 for p in others):
        return Reader(path, module, "weight", 1, "bias" if "bias" in params else None)  # a router
    return None


def _name(func: Callable) -> str:
    return getattr(func, "__name__", str(func))


def _storage(tensor: torch.Tensor) -> int | None:
    try:
        pointer = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    return pointer or None


class _Trace(TorchFunctionMode):
    """Follows the storages of the norms' outputs through one forward pass."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.origin: dict[int, str] = {}  # storage pointer -> norm name
        self.alive: list[torch.Tensor] = []  # keeps traced storages from being reused
        self.readers: dict[str, list[tuple[str, nn.Module]]] = defaultdict(list)
        self.misuse: dict[str, str] = {}
        self.scaled: dict[str, str] = {}  # norm -> where a Python number multiplies its output
        self.products: dict[str, set[str]] = defaultdict(set)  # norm -> HF module paths running a product on it
        self.operands: dict[str, set[int]] = defaultdict(set)  # norm -> ids of parameters in an op with its output
        self.where: list[str] = []  # HF module paths, innermost last

    def mark(self, tensor: torch.Tensor, norm: str) -> None:
        pointer = _storage(tensor)
        if pointer is not None:
            self.origin.setdefault(pointer, norm)
            self.alive.append(tensor)

    def sources(self, values: Iterable[Any]) -> set[str]:
        found = set()
        for value in values:
            if isinstance(value, torch.Tensor):
                pointer = _storage(value)
                if pointer in self.origin:
                    found.add(self.origin[pointer])
        return found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = _name(func)
        read = (args[:1], {}) if name in _DTYPE_OF_OTHERS else (args, kwargs)
        leaves = pytree.tree_leaves(read)
        sources = self.sources(leaves)
        if not sources:
            return out
        for norm in sources:
            self.operands[norm].update(id(leaf) for leaf in leaves if isinstance(leaf, nn.Parameter))
        results = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        place = self.where[-1] if self.where else "the model's top-level forward"
        if name in _PRODUCTS:
            for norm in sources:
                self.products[norm].add(place)
            return out
        if not results or name in _SHAPE_ONLY:
            return out
        scalar = (
            name in _SCALINGS and len(args) == 2 and not kwargs and isinstance(args[1 - _tensor_at(args)], float | int)
        )
        if scalar and all(t.ndim and t.shape[-1] == self.d_model for t in results):
            for norm in sources:
                self.scaled.setdefault(norm, f"`{name}` by {args[1 - _tensor_at(args)]} in {place}")
        if (name in _PASS_THROUGH or scalar) and all(t.ndim and t.shape[-1] == self.d_model for t in results):
            for tensor in results:
                for norm in sources:
                    self.mark(tensor, norm)
            return out
        for norm in sources:
            self.misuse.setdefault(norm, f"`{name}` in {place}")
        return out


def _tensor_at(args: tuple) -> int:
    """Which of a binary operation's two arguments is the tensor (0 unless only the second is)."""
    return 0 if isinstance(args[0], torch.Tensor) else 1


def find_readers(
    model: nn.Module, norms: Mapping[str, nn.Module], d_model: int, run: Callable[[], Any]
) -> dict[str, list[Reader]]:
    """For each norm (canonical name → HF module), the weights that read its output during ``run()``.

    Raises ``WeightProcessingError`` naming the norm and what else reads its output when folding it
    into its readers would not be exact.
    """
    trace = _Trace(d_model)
    paths = {id(m): n or "<model>" for n, m in model.named_modules(remove_duplicate=False)}
    handles = []

    def enter(module: nn.Module, args: tuple, kwargs: dict) -> None:
        trace.where.append(paths[id(module)])
        for norm in trace.sources((*args, *kwargs.values())):
            trace.readers[norm].append((paths[id(module)], module))

    def leave(module: nn.Module, args: tuple, output: Any) -> None:
        trace.where.pop()

    def norm_output(name: str) -> Callable:
        return lambda _module, _args, output: trace.mark(output, name)

    try:
        for name, norm in norms.items():
            handles.append(norm.register_forward_hook(norm_output(name)))
        for module in dict.fromkeys(m for _, m in model.named_modules()):
            handles.append(module.register_forward_pre_hook(enter, with_kwargs=True))
            handles.append(module.register_forward_hook(leave, always_call=True))
        with torch.no_grad(), trace:
            run()
    finally:
        for handle in handles:
            handle.remove()
    for name, norm in norms.items():
        if name in trace.scaled and getattr(norm, "bias", None) is not None:
            trace.misuse.setdefault(name, f"{trace.scaled[name]} (a scaled output of a norm with a bias)")
    return {name: _innermost_readers(name, trace, d_model) for name in norms}


def _innermost_readers(norm: str, trace: _Trace, d_model: int) -> list[Reader]:
    if norm in trace.misuse:
        raise WeightProcessingError(
            f"cannot fold {norm}: its output is read by {trace.misuse[norm]}, not only by weight matrices, "
            "so its weight and bias cannot move into the layers after it. Process without fold_ln."
        )
    # modules without parameters (dropouts, activations) only pass values on; their torch ops were checked
    found = {id(m): (p, m) for p, m in trace.readers.get(norm, []) if next(m.parameters(), None) is not None}
    inner = {i: pm for i, pm in found.items() if not any(id(d) in found for d in list(pm[1].modules())[1:])}
    readers = []
    for key, (path, module) in found.items():  # an outer module's own weights must not touch the output
        if key not in inner and any(id(p) in trace.operands[norm] for p in module._parameters.values()):
            raise WeightProcessingError(
                f"cannot fold {norm}: {path} ({type(module).__name__}) reads its output with weights of its "
                "own besides its submodules, and bridge does not know how. Process without fold_ln."
            )
    if not inner:
        raise WeightProcessingError(f"cannot fold {norm}: no weight matrix reads its output. Process without fold_ln.")
    inner_paths = [path for path, _ in inner.values()]
    for place in trace.products.get(norm, ()):
        if not any(place == path or place.startswith(f"{path}.") for path in inner_paths):
            raise WeightProcessingError(
                f"cannot fold {norm}: {place} multiplies its output by a matrix that is not a weight of a module "
                "reading it, so bridge cannot tell which weight to fold into. Process without fold_ln."
            )
    for path, module in inner.values():
        reader = reader_of(module, path, d_model)
        if reader is None:
            raise WeightProcessingError(
                f"cannot fold {norm} into {path} ({type(module).__name__}): bridge folds norms into nn.Linear, "
                "Conv1D, MoE routers and HF expert tensors only. Process without fold_ln."
            )
        readers.append(reader)
    return readers
