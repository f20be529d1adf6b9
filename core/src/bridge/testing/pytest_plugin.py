"""Kept for old imports: bridge-core's pytest plugin is the top-level module ``pytest_bridge`` (entry point
``pytest11``), which imports nothing heavy until ``--bridge-conformance`` is given."""

from pytest_bridge import pytest_addoption, pytest_configure

__all__ = ["pytest_addoption", "pytest_configure"]
