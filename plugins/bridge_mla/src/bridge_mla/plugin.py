"""The ``bridge`` entry point of bridge-mla: the family's adapters, their examples and its benchmark models."""

import bridge
from bridge_mla.adapters import ADAPTERS


@bridge.hookimpl
def register_adapters(register):
    for adapter in ADAPTERS:
        register(adapter)


@bridge.hookimpl
def register_examples(register):
    from bridge_mla.examples import EXAMPLES

    for examples in EXAMPLES:
        register(examples)


@bridge.hookimpl
def bench_configs():
    from bridge_mla.bench import bench_configs

    return bench_configs()
