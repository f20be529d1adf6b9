"""Every call in ``compat/tutorial_surface.py`` names a compat test that exists."""

import ast
from pathlib import Path

import pytest

from compat.tutorial_surface import SURFACE

ROOT = Path(__file__).resolve().parents[1]


def _tests_in(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


@pytest.mark.parametrize("call", sorted(SURFACE))
def test_each_tutorial_call_names_an_existing_compat_test(call):
    path, test = SURFACE[call].split("::")
    assert test in _tests_in(path), f"{call}: {SURFACE[call]} does not exist"
