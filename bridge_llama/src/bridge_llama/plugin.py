"""The ``bridge`` entry point of bridge-llama: the family's adapters, their examples and its benchmark models."""

from collections.abc import Callable
from typing import Any

import bridge
from bridge_llama.catalog import ADAPTERS


@bridge.hookimpl
def register_adapters(register: Callable) -> None:
    for adapter in ADAPTERS:
        register(adapter)


@bridge.hookimpl
def register_examples(register: Callable) -> None:
    from bridge_llama.examples import EXAMPLES

    for examples in EXAMPLES:
        register(examples)


@bridge.hookimpl
def bench_configs() -> dict[str, Any]:
    from bridge_llama.bench import bench_configs

    return bench_configs()
