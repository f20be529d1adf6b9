"""bridge-core's pytest plugin (entry point ``pytest11`` → ``pytest_bridge``) costs a pytest session nothing until
``--bridge-conformance`` is given: it imports neither bridge, torch nor transformers, yet offers the option and
registers the kit's ``variants`` marker."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys, pytest
code = pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]])
print("EXIT", int(code))
print("IMPORTED", sorted(m for m in ("bridge", "torch", "transformers") if m in sys.modules))
"""


def run_pytest(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_collecting_an_empty_directory_imports_nothing_heavy(tmp_path):
    run = run_pytest("--co", str(tmp_path), cwd=tmp_path)
    assert "IMPORTED []" in run.stdout, run.stdout + run.stderr


def test_the_option_and_the_variants_marker_are_there_without_importing_bridge(tmp_path):
    run = run_pytest("--help", cwd=tmp_path)
    assert "--bridge-conformance" in run.stdout
    assert "IMPORTED []" in run.stdout, run.stdout
    markers = run_pytest("--markers", cwd=tmp_path)
    assert "@pytest.mark.variants:" in markers.stdout
    assert "IMPORTED []" in markers.stdout


def test_a_test_using_the_variants_marker_collects_without_a_warning(tmp_path):
    (tmp_path / "test_marked.py").write_text("import pytest\n\n@pytest.mark.variants\ndef test_it():\n    pass\n")
    run = run_pytest("-W", "error::pytest.PytestUnknownMarkWarning", str(tmp_path), cwd=tmp_path)
    assert "EXIT 0" in run.stdout, run.stdout + run.stderr
