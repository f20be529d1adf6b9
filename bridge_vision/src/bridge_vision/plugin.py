"""The ``bridge`` entry point of bridge-vision: registers the family's adapters."""

import bridge
from bridge_vision.adapters import ADAPTERS
from bridge_vision.vlm import VLM_ADAPTERS


@bridge.hookimpl
def register_adapters(register):
    for adapter in (*ADAPTERS, *VLM_ADAPTERS):
        register(adapter)
