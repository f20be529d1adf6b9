"""The ``bridge`` entry point of bridge-gpt2: the family's adapters, their examples and its benchmark models."""

import bridge
from bridge_gpt2.adapters import ADAPTERS


@bridge.hookimpl
def register_adapters(register):
    for adapter in ADAPTERS:
        register(adapter)


@bridge.hookimpl
def register_examples(register):
    from bridge_gpt2.examples import EXAMPLES

    for examples in EXAMPLES:
        register(examples)


@bridge.hookimpl
def bench_configs():
    from bridge_gpt2.bench import bench_configs

    return bench_configs()
