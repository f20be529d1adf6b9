"""The hooks a bridge plugin can implement. Mark implementations with ``@bridge.hookimpl``.

A plugin is a module (named by a ``[project.entry-points.bridge]`` entry point)
with functions of these names; pluggy passes only the arguments a function asks for.
Each hook's docstring says what happens when an implementation fails; every failure
names the plugin's distribution and the hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from bridge.kernel.adapter import Adapter
    from bridge.kernel.config import BridgeConfig
    from bridge.kernel.examples import Examples

hookspec = pluggy.HookspecMarker("bridge")
hookimpl = pluggy.HookimplMarker("bridge")


@hookspec
def register_adapters(register: Callable[[type[Adapter]], None]) -> None:
    """Register this plugin's adapters.

    Called once, when the plugins are first loaded. Call ``register(AdapterClass)``
    for each adapter; the class's ``architectures`` and ``model_types`` say what it
    handles. Returns nothing. Two plugins claiming one name are resolved by
    ``Adapter.priority`` (then first-party wins) with a warning naming both.
    If it raises (or registers a non-``Adapter``), the entry point is skipped with a
    ``PluginLoadWarning`` and listed as broken, and none of its adapters are kept.

    Example::

        @bridge.hookimpl
        def register_adapters(register):
            register(GPT2Adapter)
    """


@hookspec(firstresult=True)
def match_adapter(hf_config: Any) -> type[Adapter] | None:
    """Claim a model whose architecture and ``model_type`` no registered adapter names.

    Called by ``bridge.load``/``wrap`` only after name lookup failed, with the HF config.
    Return an adapter class to use it (the first non-``None`` answer wins), or ``None``.
    An implementation that raises or returns anything else is skipped with a
    ``PluginHookWarning`` naming the plugin; the other plugins are still asked.

    Example::

        @bridge.hookimpl
        def match_adapter(hf_config):
            if getattr(hf_config, "model_type", "") == "my-renamed-gpt2":
                return GPT2Adapter
    """


@hookspec
def configure(config: BridgeConfig, hf_config: Any) -> None:
    """Adjust the normalized config of a model about to be bridged.

    Called for every load/wrap, after the adapter built ``config`` from ``hf_config``
    and before any component is made. Modify ``config`` in place; return nothing.
    If it raises, the load stops with ``PluginHookError`` naming the plugin and hook.

    Example::

        @bridge.hookimpl
        def configure(config, hf_config):
            config.extra["my_flag"] = getattr(hf_config, "my_flag", False)
    """


@hookspec
def bridge_ready(bridge: Any) -> None:
    """React to a finished bridge (add permanent hooks, record metadata).

    ``bridge`` is the model ``bridge.load``/``bridge.wrap`` built: a ``bridge.Bridge`` (the kernel's
    ``HookedModel`` when a tool builds the plain kind, as ``bridge demo`` and ``bridge harvest`` do).

    Called once per load/wrap, after every component is attached. Return nothing.
    If it raises, the bridge is detached (the HF model is left as it was) and the load
    stops with ``PluginHookError`` naming the plugin and hook.

    Example::

        @bridge.hookimpl
        def bridge_ready(bridge):
            bridge.cfg.extra["loaded_by"] = "my-plugin"
    """


@hookspec
def register_examples(register: Callable[[type[Examples]], None]) -> None:
    """Register the ``Examples`` of this plugin's adapters: tiny configs and inputs for tests.

    Called once, the first time the conformance kit, ``pytest --bridge-conformance``, ``bridge inspect``
    or a benchmark asks for an adapter's examples; never by ``bridge.load``, so import the example module
    inside the implementation. Call ``register(ExamplesClass)`` for each; its ``adapter`` names the adapter
    it describes. Returns nothing. If it raises (or registers a non-``Examples``), none of that plugin's
    examples are kept and a ``PluginHookWarning`` names it; the other plugins' examples still are.

    Example::

        @bridge.hookimpl
        def register_examples(register):
            from my_family.examples import EXAMPLES
            for examples in EXAMPLES:
                register(examples)
    """


@hookspec
def bench_configs() -> dict[str, Any] | None:
    """Models for ``make bench``: a label → tiny-but-realistic HF config (random weights).

    Called once per benchmark run. Return a dict whose configs name their HF class in ``architectures`` (or
    ``None``: no models);
    every plugin's dicts are merged (a later label replaces an earlier one). A failing implementation is
    skipped with a ``PluginHookWarning``.

    Example::

        @bridge.hookimpl
        def bench_configs():
            return {"gpt2 (6L, d384)": GPT2Config(n_layer=6, n_embd=384, architectures=["GPT2LMHeadModel"])}
    """


@hookspec(firstresult=True)
def demo(model: Any, png: Any, out: Callable[[str], None], default_png: bool) -> dict[str, Any] | None:
    """Run this plugin's demo on ``model``, if the model is of a kind the plugin demonstrates.

    Called by ``bridge demo`` after it loaded the model and printed its hook points. ``png`` is where to draw
    (a path, or ``None``: draw nothing unless ``default_png``, then to the demo's own default picture);
    print through ``out``. Return the demo's results as a dict (the first answer wins), or ``None`` to let
    others (and at last the built-in induction-head demo for language models) run.

    Example::

        @bridge.hookimpl
        def demo(model, png, out, default_png):
            if "image" not in model.adapter.modalities:
                return None
            out("where the classifier looks …")
            return {"prediction": ...}
    """
