"""The ``bridge`` entry point of bridge-mamba: the family's adapters, their examples and its benchmark models."""

import bridge
from bridge_mamba.catalog import ADAPTERS


@bridge.hookimpl
def register_adapters(register):
    for adapter in ADAPTERS:
        register(adapter)


@bridge.hookimpl
def register_examples(register):
    from bridge_mamba.examples import EXAMPLES

    for examples in EXAMPLES:
        register(examples)


@bridge.hookimpl
def bench_configs():
    from bridge_mamba.bench import bench_configs

    return bench_configs()
