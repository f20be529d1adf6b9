"""Hypothesis settings every bridge test suite shares, so that a red run can always be replayed.

``load_hypothesis_profile()`` (called from a ``conftest.py``) registers two profiles and loads the one named by
``HYPOTHESIS_PROFILE``:

- ``bridge-ci`` (the default): derandomized, so every run draws the same examples and a failure in CI fails the same
  way on any machine (hypothesis also prints the failing example and a ``@reproduce_failure`` blob); no example
  database, no deadline;
- ``bridge-deep``: random examples, ``BRIDGE_PROPERTY_EXAMPLES`` (default 400) of them per property test: run it now
  and then (not in CI) to find the next rare failure before CI does; a failure prints its seed
  (``--hypothesis-seed=N`` replays it).

``property_settings(n)`` is what a property test uses: ``n`` examples (``BRIDGE_PROPERTY_EXAMPLES`` overrides it for a
deep run), no deadline, module-scoped fixtures allowed; the rest comes from the loaded profile.
"""

from __future__ import annotations

import os
from typing import Any

#: The profile ``load_hypothesis_profile`` loads when ``HYPOTHESIS_PROFILE`` is not set.
DEFAULT_PROFILE = "bridge-ci"
#: Examples per property in the deep profile unless ``BRIDGE_PROPERTY_EXAMPLES`` says otherwise.
DEEP_EXAMPLES = 400


def register_hypothesis_profiles() -> None:
    """Register ``bridge-ci`` and ``bridge-deep`` (idempotent)."""
    from hypothesis import HealthCheck, settings

    common: dict[str, Any] = {"deadline": None, "suppress_health_check": list(HealthCheck), "print_blob": True}
    settings.register_profile("bridge-ci", derandomize=True, database=None, **common)
    deep = int(os.environ.get("BRIDGE_PROPERTY_EXAMPLES", DEEP_EXAMPLES))
    settings.register_profile("bridge-deep", max_examples=deep, derandomize=False, database=None, **common)


def load_hypothesis_profile() -> str:
    """Register the profiles and load ``HYPOTHESIS_PROFILE`` (default ``bridge-ci``); returns its name."""
    from hypothesis import settings

    register_hypothesis_profiles()
    name = os.environ.get("HYPOTHESIS_PROFILE") or DEFAULT_PROFILE
    settings.load_profile(name)
    return name


def property_settings(max_examples: int, **overrides: Any) -> Any:
    """Hypothesis settings for one property test: ``max_examples`` examples (``BRIDGE_PROPERTY_EXAMPLES`` replaces
    the count: a deep run), no deadline, module-scoped fixtures allowed; anything else from the loaded profile."""
    from hypothesis import HealthCheck, settings

    count = int(os.environ.get("BRIDGE_PROPERTY_EXAMPLES", max_examples))
    checks = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
    options: dict[str, Any] = {"max_examples": count, "deadline": None, "suppress_health_check": checks}
    return settings(**{**options, **overrides})


__all__ = ["DEFAULT_PROFILE", "load_hypothesis_profile", "property_settings", "register_hypothesis_profiles"]
