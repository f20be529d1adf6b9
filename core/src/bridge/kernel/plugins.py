"""Plugin discovery: one pluggy ``PluginManager("bridge")`` fed from entry points.

Every family, first-party or not, is a distribution with a ``[project.entry-points.bridge]``
entry point; core registers none itself. Entry points load one at a time, each registered
under its own name (``distribution:entry-point``), so a distribution may have several.

Failure policy (every failure names the distribution and the hook):
  * import or ``register_adapters`` fails (any exception but ``KeyboardInterrupt``, even
    ``SystemExit``): that entry point is skipped with a ``PluginLoadWarning`` and listed as
    broken; none of its adapters stay registered; the rest keep working.
  * ``match_adapter`` raises or returns something that is not an ``Adapter`` subclass: a
    ``PluginHookWarning``, and that answer is ignored; the other plugins are still asked.
  * ``configure`` or ``bridge_ready`` raises: the load stops with ``PluginHookError`` (chained
    to the original exception) and nothing stays attached to the model.

Environment:
  ``BRIDGE_LOAD_PLUGINS=bridge-gpt2,my-plugin`` loads only those distributions
  (empty: none); ``BRIDGE_TRACE_PLUGINS=1`` prints every hook call to stderr.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from bridge.kernel import hookspecs, known
from bridge.kernel.adapter import Adapter
from bridge.kernel.errors import (
    AdapterConflictWarning,
    BridgeError,
    PluginHookError,
    PluginHookWarning,
    PluginLoadWarning,
    UnknownArchitectureError,
)
from bridge.kernel.examples import Examples, is_examples

ENTRY_POINT_GROUP = "bridge"


def canonical(name: str) -> str:
    """Distribution names compare like pip compares them (``Bridge_GPT2`` == ``bridge-gpt2``)."""
    return name.lower().replace("_", "-").replace(".", "-")


@dataclass
class PluginInfo:
    """What ``bridge plugins`` shows for one entry point."""

    distribution: str
    version: str
    entry_point: str
    status: str  # "loaded", "broken" or "disabled"
    error: str | None = None
    adapters: list[type[Adapter]] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)

    @property
    def architectures(self) -> list[str]:
        return sorted({name for a in self.adapters for name in (*a.architectures, *a.model_types)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "status": self.status,
            "error": self.error,
            "adapters": [a.describe() for a in self.adapters],
            "architectures": self.architectures,
            "hooks": self.hooks,
        }


@dataclass
class AdapterEntry:
    adapter: type[Adapter]
    distribution: str


class PluginRegistry:
    """The plugin manager, the plugins found, and the adapters they registered."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("bridge")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.by_architecture: dict[str, AdapterEntry] = {}
        self.by_model_type: dict[str, AdapterEntry] = {}
        self._info_by_name: dict[str, PluginInfo] = {}  # plugin-manager name -> its entry point
        self.failed_matchers: list[str] = []  # distributions whose match_adapter failed in the last resolve
        self._examples: dict[type[Adapter], type[Examples]] | None = None  # asked for lazily (tests, bench)
        if os.environ.get("BRIDGE_TRACE_PLUGINS"):
            self.pm.trace.root.setwriter(lambda text: print(text, end="", file=sys.stderr))
            self.pm.enable_tracing()

    # ---------------------------------------------------------------- loading

    def load_entry_points(self) -> None:
        selected = os.environ.get("BRIDGE_LOAD_PLUGINS")
        allowed = None if selected is None else {canonical(n) for n in selected.split(",") if n.strip()}
        found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.dist.name if ep.dist else "", ep.name))
        for ep in found:
            dist = ep.dist.name if ep.dist else ep.module
            version = ep.dist.version if ep.dist else "?"
            info = PluginInfo(dist, version, f"{ep.name} = {ep.value}", "disabled")
            self.plugins.append(info)
            if allowed is not None and canonical(dist) not in allowed:
                info.error = "not in BRIDGE_LOAD_PLUGINS"
                continue
            try:
                module = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a plugin's SystemExit must not end the host process
                self._broken(info, exc, "import")
                continue
            self.register_plugin(module, info)

    def register_plugin(self, plugin: Any, info: PluginInfo | None = None) -> PluginInfo:
        """Register a plugin object directly (notebooks, tests); entry points are the normal path.

        Its adapters enter the registry only once its ``register_adapters`` returned without error.
        """
        if info is None:
            name = getattr(plugin, "__name__", type(plugin).__name__)
            info = PluginInfo(name, "", name, "disabled")
            self.plugins.append(info)
        staged: list[type[Adapter]] = []
        registered = False
        try:
            self.pm.register(plugin, name=self._unique_name(info))
            registered = True
            caller = self.pm.subset_hook_caller(
                "register_adapters", remove_plugins=[p for p in self.pm.get_plugins() if p is not plugin]
            )
            caller(register=lambda adapter: staged.append(_checked_adapter(adapter)))
        except BaseException as exc:
            if registered:
                self.pm.unregister(plugin)
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._broken(info, exc, "register_adapters" if registered else "registration")
            return info
        self._info_by_name[self.pm.get_name(plugin)] = info
        self._examples = None  # the new plugin's examples are collected at the next request
        for adapter in staged:
            self._register_adapter(adapter, info)
        info.status = "loaded"
        info.error = None
        info.hooks = sorted(hook.name for hook in self.pm.get_hookcallers(plugin) or [] if hook.name in _HOOK_NAMES)
        return info

    def _unique_name(self, info: PluginInfo) -> str:
        """The plugin manager's name for one entry point: ``distribution:entry-point``."""
        entry = info.entry_point.partition(" = ")[0]
        base = info.distribution if entry == info.distribution else f"{info.distribution}:{entry}"
        name, n = base, 1
        while self.pm.has_plugin(name) or self.pm.is_blocked(name):
            n += 1
            name = f"{base}#{n}"
        return name

    def _broken(self, info: PluginInfo, exc: BaseException, stage: str) -> None:
        info.status = "broken"
        info.error = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            PluginLoadWarning(
                f"bridge: skipping plugin {info.distribution} ({info.entry_point}), its {stage} failed: "
                f"{info.error}. Other plugins still work; `bridge plugins` lists it as broken."
            ),
            stacklevel=3,
        )

    # ---------------------------------------------------------------- hook calls

    def describe_plugin(self, plugin: Any) -> tuple[str, str]:
        """``(distribution, entry point)`` of a registered plugin object, for messages."""
        name = self.pm.get_name(plugin) or repr(plugin)
        info = self._info_by_name.get(name)
        return (info.distribution, info.entry_point) if info else (name, name)

    def _call_each(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[Any, Any, BaseException | None]]:
        """Call a hook one plugin at a time, in pluggy's order: yields ``(plugin, result, error)``.

        ``KeyboardInterrupt`` propagates; any other exception is handed to the caller to attribute.
        """
        hook = getattr(self.pm.hook, hook_name)
        plugins = list(dict.fromkeys(impl.plugin for impl in reversed(hook.get_hookimpls())))
        for plugin in plugins:
            others = [p for p in self.pm.get_plugins() if p is not plugin]
            try:
                result = self.pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                yield plugin, None, exc
            else:
                yield plugin, result, None

    def call_hook(self, hook_name: str, **kwargs: Any) -> None:
        """Run ``configure``/``bridge_ready`` in every plugin; the first failure raises ``PluginHookError``."""
        for plugin, _, error in self._call_each(hook_name, **kwargs):
            if error is not None:
                distribution, entry_point = self.describe_plugin(plugin)
                raise PluginHookError(distribution, entry_point, hook_name, error) from error

    def call_first(self, hook_name: str, **kwargs: Any) -> Any:
        """The first non-``None`` answer of a hook, asking one plugin at a time. A ``BridgeError`` a plugin
        raises reaches the caller as it is (it is meant for the user); any other failure raises
        ``PluginHookError`` naming the plugin."""
        for plugin, result, error in self._call_each(hook_name, **kwargs):
            if isinstance(error, BridgeError):
                raise error
            if error is not None:
                distribution, entry_point = self.describe_plugin(plugin)
                raise PluginHookError(distribution, entry_point, hook_name, error) from error
            if result is not None:
                return result
        return None

    def _warn_hook(self, plugin: Any, hook_name: str, problem: str) -> None:
        distribution, entry_point = self.describe_plugin(plugin)
        warnings.warn(
            PluginHookWarning(
                f"bridge: plugin {distribution} ({entry_point}): its {hook_name} hook {problem}. That answer is "
                "ignored and the other plugins are still asked; report this to its authors."
            ),
            stacklevel=4,
        )

    # ---------------------------------------------------------------- examples (tests, benchmarks)

    def examples_for(self, adapter: type[Adapter]) -> type[Examples] | None:
        """The ``Examples`` a plugin registered for ``adapter`` (``register_examples``), or ``None``."""
        if self._examples is None:
            self._examples = self._collect_examples()
        return self._examples.get(adapter)

    def _collect_examples(self) -> dict[type[Adapter], type[Examples]]:
        found: dict[type[Adapter], type[Examples]] = {}
        staged: list[Any] = []
        for plugin, _, error in self._call_each("register_examples", register=staged.append):
            batch = list(staged)
            staged.clear()
            wrong = [item for item in batch if not is_examples(item)]
            if error is not None:
                self._warn_hook(plugin, "register_examples", f"raised {type(error).__name__}: {error}")
            elif wrong:
                self._warn_hook(plugin, "register_examples", f"registered {wrong[0]!r}, not an Examples subclass")
            else:
                found.update({examples.adapter: examples for examples in batch})
        return found

    def bench_configs(self) -> dict[str, Any]:
        """Every plugin's ``bench_configs()``, merged (label → HF config)."""
        merged: dict[str, Any] = {}
        for plugin, results, error in self._call_each("bench_configs"):
            results = [r for r in results or [] if r is not None]
            wrong = [r for r in results if not isinstance(r, dict)]
            if error is not None or wrong:
                problem = (
                    f"raised {type(error).__name__}: {error}" if error else f"returned a {type(wrong[0]).__name__}"
                )
                self._warn_hook(plugin, "bench_configs", problem)
                continue
            for result in results:
                merged.update(result)
        return merged

    def match(self, hf_config: Any) -> type[Adapter] | None:
        """The first valid ``match_adapter`` answer; a failing or invalid answer warns and is skipped."""
        for plugin, result, error in self._call_each("match_adapter", hf_config=hf_config):
            if error is None and result is None:
                continue
            if error is None and isinstance(result, type) and issubclass(result, Adapter):
                return result
            distribution, entry_point = self.describe_plugin(plugin)
            what = (
                f"raised {type(error).__name__}: {error}"
                if error is not None
                else f"returned {result!r} ({type(result).__name__}), not an Adapter subclass"
            )
            warnings.warn(
                PluginHookWarning(
                    f"bridge: plugin {distribution} ({entry_point}): its match_adapter hook {what}. "
                    "That answer is ignored and the other plugins are still asked; report this to its authors."
                ),
                stacklevel=4,
            )
            self.failed_matchers.append(distribution)
        return None

    # ---------------------------------------------------------------- adapters

    def _register_adapter(self, adapter: type[Adapter], info: PluginInfo) -> None:
        info.adapters.append(adapter)
        entry = AdapterEntry(adapter, info.distribution)
        for table, names in (
            (self.by_architecture, adapter.architectures),
            (self.by_model_type, adapter.model_types),
        ):
            for name in names:
                table[name] = self._winner(name, table.get(name), entry)

    @staticmethod
    def _winner(name: str, old: AdapterEntry | None, new: AdapterEntry) -> AdapterEntry:
        if old is None:
            return new
        if old.adapter is new.adapter:
            warnings.warn(
                AdapterConflictWarning(f"bridge: {new.adapter.describe()} was registered twice for {name!r}"),
                stacklevel=4,
            )
            return old

        def rank(e: AdapterEntry) -> tuple[int, int]:
            return (e.adapter.priority, canonical(e.distribution) in known.FIRST_PARTY)

        winner = new if rank(new) > rank(old) else old
        loser = old if winner is new else new
        warnings.warn(
            AdapterConflictWarning(
                f"bridge: {name!r} is claimed by {old.adapter.describe()} ({old.distribution}) and "
                f"{new.adapter.describe()} ({new.distribution}); using {winner.adapter.describe()} "
                f"from {winner.distribution}. Set a higher `priority` on an adapter to override "
                f"{loser.distribution} deliberately."
            ),
            stacklevel=4,
        )
        return winner

    def resolve(self, hf_config: Any, class_name: str | None = None) -> type[Adapter]:
        """The adapter for a config: class name, then architecture names, then ``model_type``,
        then ``match_adapter`` hooks."""
        architectures = [
            *([class_name] if class_name else []),
            *(getattr(hf_config, "architectures", None) or []),
        ]
        for name in architectures:
            if name in self.by_architecture:
                return self.by_architecture[name].adapter
        model_type = getattr(hf_config, "model_type", None)
        if model_type in self.by_model_type:
            return self.by_model_type[model_type].adapter
        self.failed_matchers = []
        matched = self.match(hf_config)
        if matched is not None:
            return matched
        raise self.unknown(architectures, model_type)

    def unknown(self, architectures: list[str], model_type: str | None) -> UnknownArchitectureError:
        what = f"architecture {architectures[0]!r}" if architectures else "this model"
        message = f"No installed bridge plugin handles {what} (model_type {model_type!r})."
        dist = known.plugin_for(architectures, model_type)
        if dist is not None:
            message += f" Install the plugin that does: pip install {dist}"
        else:
            message += " bridge knows no plugin for it: write an adapter (see `bridge.Adapter`) and register it."
        loaded = [f"{p.distribution} {p.version}" for p in self.plugins if p.status == "loaded"]
        message += f". Installed plugins: {', '.join(loaded) or 'none'}"
        broken = [p.distribution for p in self.plugins if p.status == "broken"]
        if broken:
            message += f"; broken (failed to load): {', '.join(broken)}"
        if self.failed_matchers:
            message += f"; match_adapter failed in {', '.join(self.failed_matchers)} (see the warnings)"
        if os.environ.get("BRIDGE_LOAD_PLUGINS") is not None:
            message += f"; BRIDGE_LOAD_PLUGINS={os.environ['BRIDGE_LOAD_PLUGINS']!r} limits which load"
        return UnknownArchitectureError(message + ".")


def _checked_adapter(adapter: Any) -> type[Adapter]:
    if not (isinstance(adapter, type) and issubclass(adapter, Adapter)):
        raise TypeError(f"register() takes an Adapter subclass, got {adapter!r}")
    if not (adapter.architectures or adapter.model_types):
        raise TypeError(f"{adapter.describe()} declares neither `architectures` nor `model_types`")
    return adapter


_HOOK_NAMES = {name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "bridge_spec")}
_registry: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """The process-wide registry, loading entry points on first use."""
    global _registry
    if _registry is None:
        registry = PluginRegistry()
        registry.load_entry_points()
        _registry = registry
    return _registry


def reload_plugins() -> PluginRegistry:
    """Forget the loaded plugins and discover them again (after changing ``BRIDGE_LOAD_PLUGINS``)."""
    global _registry
    _registry = None
    return get_registry()


def get_plugin_manager() -> pluggy.PluginManager:
    return get_registry().pm
