"""The old flat module paths (before the core was split into layers) still import, as the very module that
moved (so isinstance and monkeypatching agree), with a DeprecationWarning naming the new path; the public names
of the package root, ``bridge.components`` and ``bridge.testing`` are unchanged."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import bridge
from bridge._moved import MOVED

PROBE = """
import importlib, json, sys, warnings
import bridge
from bridge._moved import MOVED
found = {}
for old, new in sorted(MOVED.items()):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    found[old] = {
        "same": module is importlib.import_module(new),
        "warned": [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)],
    }
print(json.dumps(found))
"""


def test_every_old_module_path_is_the_moved_module_with_a_warning_naming_the_new_one():
    """In a fresh interpreter (no old path imported before), each old path warns once and is the new module."""
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(found) == set(MOVED) and len(MOVED) > 30
    for old, result in found.items():
        assert result["same"], old
        assert any(f"{old} moved to {MOVED[old]}" in message for message in result["warned"]), (old, result)


def test_old_attribute_access_on_the_package_root_resolves():
    assert bridge.plugins is importlib.import_module("bridge.kernel.plugins")
    assert bridge.config.BridgeConfig is bridge.BridgeConfig
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        bridge.nonexistent  # noqa: B018


def test_the_public_names_are_where_they_were():
    for name in bridge.__all__:
        assert getattr(bridge, name) is not None
    from bridge.components import MoE, softmax_then_topk, softmax_topk, topk_softmax, topk_then_softmax

    assert softmax_topk is softmax_then_topk and topk_softmax is topk_then_softmax and MoE.__name__ == "MoE"
    testing = importlib.import_module("bridge.testing")
    for name in testing.__all__:
        assert getattr(testing, name) is not None
    assert callable(bridge.harvest) and callable(bridge.harvest.open)
    assert isinstance(bridge.Bridge.__mro__, tuple) and bridge.HookedModel in bridge.Bridge.__mro__
