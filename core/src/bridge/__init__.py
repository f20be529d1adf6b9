"""bridge: TransformerLens-style named hook points on any HuggingFace transformers model.

import bridge
model = bridge.load("path/or/hub-name")
logits, cache = model.run_with_cache("The cat sat on the")
cache["blocks.0.attn.hook_pattern"]   # [batch, head, q_pos, k_pos]
"""

from bridge.adapter import Adapter, BlockSpec, ComponentMap, Spec
from bridge.cache import ActivationCache, act_name
from bridge.config import BridgeConfig, config_from_hf
from bridge.errors import (
    BridgeError,
    ComponentMapError,
    HookNameError,
    HookShapeError,
    NoLMHeadError,
    OptInHookError,
    UnknownArchitectureError,
)
from bridge.harvested import HarvestedActivations, open_harvest
from bridge.harvesting import harvest
from bridge.hook_points import HookHandle, HookPoint
from bridge.hookspecs import hookimpl, hookspec
from bridge.loading import load, wrap
from bridge.model import Bridge, ConcurrentUseError
from bridge.ownership import AlreadyWrappedError, unwrap
from bridge.plugins import get_plugin_manager, get_registry, reload_plugins

__version__ = "0.1.0"
harvest.open = open_harvest  # bridge.harvest(...) writes a harvest, bridge.harvest.open(dir) reads one

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
    "HarvestedActivations",
    "HookHandle",
    "HookNameError",
    "HookPoint",
    "HookShapeError",
    "NoLMHeadError",
    "OptInHookError",
    "Spec",
    "UnknownArchitectureError",
    "act_name",
    "config_from_hf",
    "get_plugin_manager",
    "get_registry",
    "harvest",
    "hookimpl",
    "hookspec",
    "load",
    "reload_plugins",
    "unwrap",
    "wrap",
]
