"""Core's tests run without any family: they import no family package (their fixture adapters are written with
bridge's public API in ``core/tests/public_api_adapters.py``), and ``make test`` runs them with no plugin loaded
(``BRIDGE_LOAD_PLUGINS=``), where ``core/tests/conftest.py`` refuses any import of a family package at run time."""

from __future__ import annotations

import ast
from pathlib import Path

from bridge.kernel import known

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {name.replace("-", "_") for name in known.FIRST_PARTY}


def imported_modules(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_core_tests_import_no_family():
    offenders = {
        path.name: sorted(imported_modules(path.read_text()) & FAMILIES)
        for path in (ROOT / "core" / "tests").glob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}
    scripts = [p.name for p in (ROOT / "core" / "tests").glob("*.py") if any(f in p.read_text() for f in FAMILIES)]
    assert scripts == ["conftest.py"], (
        f"core tests naming a family package (in a string: a subprocess script?): {scripts}"
    )


def test_make_test_runs_core_tests_with_no_plugin_loaded():
    makefile = (ROOT / "Makefile").read_text()
    assert 'BRIDGE_LOAD_PLUGINS= $(PY) -m pytest -n 2 -m "not variants" core/tests' in makefile
    assert "--ignore=core/tests" in makefile


def test_core_conftest_refuses_family_imports_when_no_plugin_is_loaded():
    from bridge.testing import run_isolated

    script = f"""
        import sys
        sys.path.insert(0, {str(ROOT / "core" / "tests")!r})
        import conftest  # installs the import guard: BRIDGE_LOAD_PLUGINS is empty
        import bridge
        assert [p.distribution for p in bridge.get_registry().plugins if p.status == "loaded"] == ["bridge-fixtures"]
        try:
            import bridge_gpt2
        except ImportError as err:
            print("refused:", err)
    """
    result = run_isolated(script, plugins="")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: core's tests run without any family" in result.stdout
