"""Which ``Examples`` the kit uses for an adapter: the one its plugin registered (``register_examples``),
or an ``Examples`` class passed in its place (an adapter not installed as a plugin)."""

from __future__ import annotations

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
        if found is None:  # a subclass of a registered adapter inherits its examples, rebound to it
            bases = [registry.examples_for(base) for base in subject.__mro__[1:] if issubclass(base, Adapter)]
            inherited = next((examples for examples in bases if examples is not None), None)
            if inherited is not None:
                found = type(f"{subject.__name__}Examples", (inherited,), {"adapter": subject})
        if found is None:
            raise ConformanceError(
                f"no Examples are registered for {subject.__name__}: the kit builds its tiny models from them. "
                "Register an Examples subclass (with adapter = the adapter) in your plugin's register_examples "
                "hook, or pass that Examples class to the kit instead of the adapter."
            )
        return found
    raise TypeError(f"expected an Adapter or Examples subclass, got {subject!r}")


def adapter_of(subject: Any) -> type[Adapter]:
    """The adapter class behind ``subject`` (an adapter, or an examples class)."""
    return subject.adapter if is_examples(subject) else subject


__all__ = ["AdapterLike", "adapter_of", "examples_of"]
