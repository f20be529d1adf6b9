"""The ``bridge`` entry point of bridge-vision: registers the family's adapters."""

import bridge
from bridge_vision.adapters import ADAPTERS


@bridge.hookimpl
def register_adapters(register):
    for adapter in ADAPTERS:
        register(adapter)
