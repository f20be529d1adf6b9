"""The ``bridge`` entry point of bridge-encoders: the family's adapters, their examples and its benchmark models."""

import bridge
from bridge_encoders.adapters import ADAPTERS


@bridge.hookimpl
def register_adapters(register):
    for adapter in ADAPTERS:
        register(adapter)


@bridge.hookimpl
def register_examples(register):
    from bridge_encoders.examples import EXAMPLES

    for examples in EXAMPLES:
        register(examples)


@bridge.hookimpl
def bench_configs():
    from bridge_encoders.bench import bench_configs

    return bench_configs()
