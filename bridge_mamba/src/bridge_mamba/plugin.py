"""The ``bridge`` entry point of bridge-mamba: the family's adapters, their examples, its benchmark models and the
hybrid induction demo."""

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


#: Where ``bridge demo`` draws a hybrid's induction head when no ``--png`` is given.
DEFAULT_PNG = "examples/output/hybrid_induction_head.png"


@bridge.hookimpl
def demo(model, png, out, default_png):
    """Hybrid language models (attention next to SSM or linear-attention layers): which layer kind does induction."""
    from bridge_mamba.demo import is_hybrid_language_model, run_hybrid_demo

    if not is_hybrid_language_model(model):
        return None
    if png is None and default_png:
        png = DEFAULT_PNG
    return run_hybrid_demo(model, png, out)
