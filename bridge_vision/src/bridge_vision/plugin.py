"""The ``bridge`` entry point of bridge-vision: the family's adapters, their examples, benchmark models and the
image-classifier demo."""

from pathlib import Path
from typing import Any

import bridge
from bridge_vision.adapters import ADAPTERS
from bridge_vision.qwen_vl import QWEN_VL_ADAPTERS
from bridge_vision.vlm import VLM_ADAPTERS

#: Where ``bridge demo`` draws an image classifier's attention when no ``--png`` is given.
DEFAULT_PNG = "examples/output/vision_attention.png"


@bridge.hookimpl
def register_adapters(register):
    for adapter in (*ADAPTERS, *VLM_ADAPTERS, *QWEN_VL_ADAPTERS):
        register(adapter)


@bridge.hookimpl
def register_examples(register):
    from bridge_vision.examples import EXAMPLES

    for examples in EXAMPLES:
        register(examples)


@bridge.hookimpl
def bench_configs():
    from bridge_vision.bench import bench_configs

    return bench_configs()


@bridge.hookimpl
def demo(model, png, out, default_png) -> dict[str, Any] | None:
    """Image classifiers (CLIP/SigLIP towers with a classification head): where the model looks."""
    if "image" not in model.adapter.modalities or "text" in model.adapter.modalities:
        return None
    from bridge_vision.demo import run_vision_demo

    if png is None and default_png:
        png = Path(DEFAULT_PNG)
    return run_vision_demo(model, png, out)
