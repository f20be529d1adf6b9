"""Core's test session: the public-API fixture plugin (``fixture_plugin``) stands in for every family.

Core's tests never import a family distribution. ``make test`` runs them with ``BRIDGE_LOAD_PLUGINS=`` set to
nothing: no entry point is loaded, and importing a first-party family package (``bridge_gpt2``…) raises, so a
test that needs a family cannot pass here; it belongs in the repository's root ``tests/``.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import fixture_plugin  # noqa: E402
from public_api_adapters import GPT2Adapter  # noqa: E402

import bridge  # noqa: E402
from bridge.kernel import known  # noqa: E402
from bridge.testing import examples_of, save_tiny_model  # noqa: E402

#: The import names of the first-party family distributions (``bridge-gpt2`` → ``bridge_gpt2``).
FAMILY_PACKAGES = frozenset(name.replace("-", "_") for name in known.FIRST_PARTY)


class NoFamilies(importlib.abc.MetaPathFinder):
    """Refuses to import a first-party family package: core's tests run without any family."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in FAMILY_PACKAGES:
            raise ImportError(
                f"core's tests run without any family (BRIDGE_LOAD_PLUGINS is empty): {name} may not be imported "
                "here; use the fixture adapters of core/tests/public_api_adapters.py, or move the test to tests/"
            )
        return None


if os.environ.get("BRIDGE_LOAD_PLUGINS") == "":
    sys.meta_path.insert(0, NoFamilies())

fixture_plugin.install()


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    return save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path_factory.mktemp("gpt2"))


@pytest.fixture
def gpt2(gpt2_dir):
    return bridge.load(gpt2_dir, adapter=GPT2Adapter)


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry rebuilt for the test (with the fixture plugin) and discarded after it."""
    yield lambda: fixture_plugin.install(bridge.reload_plugins())
    monkeypatch.undo()
    fixture_plugin.install(bridge.reload_plugins())
