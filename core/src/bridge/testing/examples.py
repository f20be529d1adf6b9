"""Which ``Examples`` the kit uses for an adapter: the one its plugin registered (``register_examples``),
or an ``Examples`` class passed in its place (an adapter not installed as a plugin)."""

from __future__ import annotations

import warnings
from typing import Any

from bridge.kernel.adapter import Adapter
from bridge.kernel.examples import Examples, is_examples
from bridge.kernel.plugins import get_registry
from bridge.testing.compare import ConformanceError

#: What the kit's functions take: an adapter class (its plugin registered its examples) or an examples class.
AdapterLike = type[Adapter] | type[Examples]


def examples_of(subject: Any) -> type[Examples]:
    """The examples of ``subject``: itself if it is an ``Examples`` class, else those registered for the adapter
    (for an adapter subclassing a registered one: the base's examples, building the subclass)."""
    if is_examples(subject):
        return subject
    if isinstance(subject, type) and issubclass(subject, Adapter):
        registry = get_registry()
        found = registry.examples_for(subject)
        if found is None and any(name in vars(subject) for name in LEGACY_MEMBERS):  # its own, the old way
            found = _from_legacy_adapter(subject)
        if found is None:  # a subclass of a registered adapter inherits its examples, rebound to it
            bases = [registry.examples_for(base) for base in subject.__mro__[1:] if issubclass(base, Adapter)]
            inherited = next((examples for examples in bases if examples is not None), None)
            if inherited is not None:
                found = type(f"{subject.__name__}Examples", (inherited,), {"adapter": subject})
        if found is None and callable(getattr(subject, "example_config", None)):
            found = _from_legacy_adapter(subject)
        if found is None:
            raise ConformanceError(
                f"no Examples are registered for {subject.__name__}: the kit builds its tiny models from them. "
                "Register an Examples subclass (with adapter = the adapter) in your plugin's register_examples "
                "hook, or pass that Examples class to the kit instead of the adapter."
            )
        return found
    raise TypeError(f"expected an Adapter or Examples subclass, got {subject!r}")


#: The test-only members adapters had before ``Examples`` held them.
LEGACY_MEMBERS = ("example_config", "conformance_configs", "example_input", "reference_model", "unread_hooks")


def _from_legacy_adapter(adapter: type[Adapter]) -> type[Examples]:
    """Examples for an adapter written before ``Examples`` existed (its ``example_config`` and kin are its own
    class methods): they are read from it, with a ``DeprecationWarning`` saying where they belong now."""
    warnings.warn(
        f"{adapter.__name__} defines example_config() itself; move its test-only members "
        f"({', '.join(m for m in LEGACY_MEMBERS if hasattr(adapter, m))}) to an Examples subclass "
        "(bridge.kernel.Examples, adapter = the adapter) registered by the plugin's register_examples hook",
        DeprecationWarning,
        stacklevel=3,
    )
    members: dict[str, Any] = {"adapter": adapter}
    for name in LEGACY_MEMBERS:
        if name not in vars(Examples) or not hasattr(adapter, name):
            continue
        value = getattr(adapter, name)
        members[name] = value if name == "unread_hooks" else classmethod(_delegate(value))
    if callable(getattr(adapter, "reference_part", None)):
        members["reference_part"] = classmethod(_instance_reference_part)
    return type(f"{adapter.__name__}Examples", (Examples,), members)


def _instance_reference_part(cls: type[Examples], adapter: Adapter, *args: Any) -> Any:
    return type(adapter).reference_part(adapter, *args)  # type: ignore[attr-defined]


def _delegate(method: Any) -> Any:
    return lambda cls, *args, **kwargs: method(*args, **kwargs)


def adapter_of(subject: Any) -> type[Adapter]:
    """The adapter class behind ``subject`` (an adapter, or an examples class)."""
    return subject.adapter if is_examples(subject) else subject


__all__ = ["AdapterLike", "adapter_of", "examples_of"]
