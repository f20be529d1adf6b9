"""The kernel: everything a family plugin builds on, and nothing more.

A plugin imports only ``bridge``, ``bridge.components``, ``bridge.kernel`` (and, in its tests,
``bridge.testing``). Here: adapters and component maps (``Adapter``, ``ComponentMap``, ``Spec``,
``BlockSpec``, ``Composite``), the normalized config, hook points, the attention seam, plugin hooks
(``hookimpl``), examples for the conformance kit (``Examples``, the ``TINY_*`` sizes), errors, and the
hooked model (``HookedModel``) with its plain activation cache. Modules, lowest first: ``errors``,
``config``, ``hook_points``, ``dispatch``, ``seam``, ``factored_matrix``, ``components``, ``adapter``,
``examples``, ``tiny``, ``known``, ``hookspecs``, ``plugins``, ``towers``, ``map_checks``, ``slicing``,
``cache``, ``tokens``, ``validation``, ``loss``, ``model_inputs``, ``ownership``, ``lifecycle``,
``hooked_model``, ``resolution``.
"""

from bridge.kernel.adapter import (
    Adapter,
    BlockSpec,
    ComponentMap,
    Composite,
    DenseOrMoEBlockSpec,
    LayerKinds,
    PerLayerBlockSpec,
    Spec,
    Tower,
)
from bridge.kernel.cache import PlainActivationCache, act_name
from bridge.kernel.config import BridgeConfig, config_from_hf
from bridge.kernel.errors import (
    BadInputError,
    BridgeError,
    ComponentMapError,
    HookNameError,
    HookOutputError,
    HookShapeError,
    NoLMHeadError,
    OptInHookError,
    UnknownArchitectureError,
)
from bridge.kernel.examples import ExampleInput, Examples
from bridge.kernel.factored_matrix import FactoredMatrix
from bridge.kernel.hook_points import HookHandle, HookPoint
from bridge.kernel.hooked_model import HookedModel
from bridge.kernel.hookspecs import hookimpl, hookspec
from bridge.kernel.plugins import get_registry
from bridge.kernel.seam import additive_mask, eager_attention, inner_attention, set_owner
from bridge.kernel.tiny import TINY_BOS_ID, TINY_EOS_ID, TINY_PAD_ID, TINY_SPECIAL_IDS, TINY_VOCAB

__all__ = [
    "TINY_BOS_ID",
    "TINY_EOS_ID",
    "TINY_PAD_ID",
    "TINY_SPECIAL_IDS",
    "TINY_VOCAB",
    "Adapter",
    "BadInputError",
    "BlockSpec",
    "BridgeConfig",
    "BridgeError",
    "ComponentMap",
    "ComponentMapError",
    "Composite",
    "DenseOrMoEBlockSpec",
    "ExampleInput",
    "Examples",
    "FactoredMatrix",
    "HookHandle",
    "HookNameError",
    "HookOutputError",
    "HookPoint",
    "HookShapeError",
    "HookedModel",
    "LayerKinds",
    "NoLMHeadError",
    "OptInHookError",
    "PerLayerBlockSpec",
    "PlainActivationCache",
    "Spec",
    "Tower",
    "UnknownArchitectureError",
    "act_name",
    "additive_mask",
    "config_from_hf",
    "eager_attention",
    "get_registry",
    "hookimpl",
    "hookspec",
    "inner_attention",
    "set_owner",
]
