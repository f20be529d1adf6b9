"""bridge-core's pytest plugin (entry point ``pytest11``): ``pytest --bridge-conformance`` runs the conformance
kit on every adapter of every installed bridge plugin, its real-checkpoint variants included.

A top-level module on purpose: loading it imports nothing of ``bridge``, torch or transformers, so every pytest
session in an environment with bridge-core installed starts as fast as without it; the kit is imported only
when the option is given. It also registers the kit's ``variants`` marker.
"""

from __future__ import annotations

from typing import Any

VARIANTS_MARKER = "variants: the conformance kit on an adapter's real-checkpoint config variants (conformance_configs)"


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("bridge")
    group.addoption(
        "--bridge-conformance",
        action="store_true",
        default=False,
        help="run bridge's conformance kit on every adapter of every installed bridge plugin",
    )


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", VARIANTS_MARKER)
    if config.getoption("--bridge-conformance"):
        from bridge.testing import conformance_suite

        config.args.append(conformance_suite.__file__)
