"""Old module paths of ``bridge`` (before its layers), still importable: ``bridge.config`` is
``bridge.kernel.config``, ``bridge.components.moe`` is ``bridge.kernel.components.moe``, and so on.

Each old name imports the same module object as the new one (so ``isinstance`` and monkeypatching agree),
with a ``DeprecationWarning`` naming the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

_KERNEL = (
    "adapter cache config dispatch errors factored_matrix hook_points hookspecs known lifecycle loss map_checks "
    "model_inputs ownership plugins seam slicing tokens towers validation"
)
_ANALYSIS = "cache_analysis generation norm_readers processing residual saes value_biases"

#: Old module path → where it lives now.
MOVED: dict[str, str] = {
    **{f"bridge.{name}": f"bridge.kernel.{name}" for name in _KERNEL.split()},
    **{f"bridge.{name}": f"bridge.analysis.{name}" for name in _ANALYSIS.split()},
    "bridge.weights": "bridge.analysis.model_weights",
    "bridge.corpus": "bridge.harvest.corpus",
    "bridge.harvesting": "bridge.harvest.writer",
    "bridge.harvested": "bridge.harvest.reader",
    "bridge.distributed": "bridge.harvest.distributed",
    "bridge.cli": "bridge.app.cli",
    "bridge.demo": "bridge.app.demo",
    "bridge.new_plugin": "bridge.app.new_plugin",
    **{
        f"bridge.components.{name}": f"bridge.kernel.components.{name}"
        for name in ["attention", "base", "blocks", "embedding", "head_inputs", "mlp", "moe", "norm", "weight_views"]
    },
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(
            f"{module.__name__} moved to {self.target}; import it from there (or from bridge, bridge.kernel, "
            "bridge.components)",
            DeprecationWarning,
            stacklevel=2,
        )
        sys.modules[module.__name__] = importlib.import_module(self.target)  # the import returns this one


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old module paths of ``MOVED`` and nothing else."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec:
        if fullname not in MOVED:
            return None  # type: ignore[return-value]
        return importlib.machinery.ModuleSpec(fullname, _Alias(MOVED[fullname]))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
