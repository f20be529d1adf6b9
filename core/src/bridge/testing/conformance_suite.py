"""Collected by ``pytest --bridge-conformance``: every check × every model of every installed adapter
(its architectures and ``conformance_configs()``) × both paths."""

from __future__ import annotations

from bridge.kernel.plugins import get_registry
from bridge.testing.parametrize import conformance_test

test_conformance = conformance_test([adapter for info in get_registry().plugins for adapter in info.adapters])
