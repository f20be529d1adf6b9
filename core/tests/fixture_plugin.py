"""The plugin core's own tests run with: the public-API fixture adapters of ``public_api_adapters`` and their
``Examples``, registered as the distribution ``bridge-fixtures`` (``conftest.py`` does it for every test session).

Core's tests never import a family distribution: ``make test`` runs them with ``BRIDGE_LOAD_PLUGINS=`` (no entry
point is loaded) and with every first-party family's package refused at import (see ``conftest.py``)."""

from __future__ import annotations

import warnings
from typing import Any

from public_api_adapters import ADAPTERS, EXAMPLES

import bridge
from bridge.kernel.errors import AdapterConflictWarning
from bridge.kernel.plugins import PluginInfo, PluginRegistry, get_registry

DISTRIBUTION = "bridge-fixtures"


@bridge.hookimpl
def register_adapters(register: Any) -> None:
    for adapter in ADAPTERS:
        register(adapter)


@bridge.hookimpl
def register_examples(register: Any) -> None:
    for examples in EXAMPLES:
        register(examples)


@bridge.hookimpl
def bench_configs() -> dict[str, Any]:
    from public_api_adapters import GPT2Examples

    return {"fixture gpt2 (2L, d32)": GPT2Examples.example_config()}


def install(registry: PluginRegistry | None = None) -> PluginRegistry:
    """Register this plugin in ``registry`` (the process's by default), once. Where a family claiming the same
    architectures is loaded too (core's tests run in one session with the families' tests), the family keeps
    them; the fixture adapters are still used wherever a test names them."""
    import sys

    registry = registry or get_registry()
    if not any(info.distribution == DISTRIBUTION for info in registry.plugins):
        info = PluginInfo(DISTRIBUTION, "0", f"fixtures = {__name__}", "disabled")
        registry.plugins.append(info)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AdapterConflictWarning)
            registry.register_plugin(sys.modules[__name__], info)
    return registry
