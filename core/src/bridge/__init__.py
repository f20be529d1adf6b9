"""bridge: TransformerLens-style named hook points on any HuggingFace transformers model.

import bridge
model = bridge.load("path/or/hub-name")
logits, cache = model.run_with_cache("The cat sat on the")
cache["blocks.0.attn.hook_pattern"]   # [batch, head, q_pos, k_pos]

Layers, each importing only from those below it: ``bridge.kernel`` (what plugins build on) →
``bridge.analysis`` and ``bridge.harvest`` → ``bridge.app`` (CLI, demo, plugin template) → ``bridge.Bridge``
(``bridge.model``), assembled here at the top; ``bridge.testing`` is the conformance kit.
"""

from bridge import _moved

_moved.install()

import sys  # noqa: E402

from bridge import harvest  # noqa: E402  (bridge.harvest(...) writes a harvest, bridge.harvest.open(dir) reads one)
from bridge.analysis import attribution, patching  # noqa: E402  (bridge.patching, bridge.attribution)
from bridge.harvest.reader import HarvestedActivations, open_harvest  # noqa: E402
from bridge.kernel.adapter import Adapter, BlockSpec, ComponentMap, DenseOrMoEBlockSpec, LayerKinds, Spec  # noqa: E402
from bridge.kernel.cache import act_name  # noqa: E402
from bridge.kernel.config import BridgeConfig, config_from_hf  # noqa: E402
from bridge.kernel.errors import (  # noqa: E402
    BridgeError,
    ComponentMapError,
    HookNameError,
    HookShapeError,
    NoLMHeadError,
    OptInHookError,
    UnknownArchitectureError,
)
from bridge.kernel.examples import Examples  # noqa: E402
from bridge.kernel.hook_points import HookHandle, HookPoint  # noqa: E402
from bridge.kernel.hooked_model import HookedModel  # noqa: E402
from bridge.kernel.hookspecs import hookimpl, hookspec  # noqa: E402
from bridge.kernel.lifecycle import ConcurrentUseError  # noqa: E402
from bridge.kernel.ownership import AlreadyWrappedError, unwrap  # noqa: E402
from bridge.kernel.plugins import get_plugin_manager, get_registry, reload_plugins  # noqa: E402
from bridge.loading import load, wrap  # noqa: E402
from bridge.model import ActivationCache, Bridge  # noqa: E402

__version__ = "0.1.0"

# `import bridge.patching` and `import bridge.attribution` name the analysis modules themselves.
sys.modules.setdefault("bridge.patching", patching)
sys.modules.setdefault("bridge.attribution", attribution)


def __getattr__(name: str) -> object:
    """``bridge.plugins``, ``bridge.config``…: the modules that moved into the layers, by their old names."""
    if f"bridge.{name}" in _moved.MOVED:
        import importlib

        return importlib.import_module(f"bridge.{name}")
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")


__all__ = [
    "ActivationCache",
    "Adapter",
    "AlreadyWrappedError",
    "BlockSpec",
    "Bridge",
    "BridgeConfig",
    "BridgeError",
    "ComponentMap",
    "ComponentMapError",
    "ConcurrentUseError",
    "DenseOrMoEBlockSpec",
    "Examples",
    "HarvestedActivations",
    "HookHandle",
    "HookNameError",
    "HookPoint",
    "HookShapeError",
    "HookedModel",
    "LayerKinds",
    "NoLMHeadError",
    "OptInHookError",
    "Spec",
    "UnknownArchitectureError",
    "act_name",
    "attribution",
    "config_from_hf",
    "get_plugin_manager",
    "get_registry",
    "harvest",
    "hookimpl",
    "hookspec",
    "load",
    "open_harvest",
    "patching",
    "reload_plugins",
    "unwrap",
    "wrap",
]
