"""Every planted mistake of ``tools/mutate.py`` still applies to today's source: each edit's text occurs exactly
once in its file (checked in memory; nothing is written). Code moved by a refactor or a merge would otherwise turn
a mutation into an error at ``make mutate`` time, long after the move."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mutate_module():
    spec = importlib.util.spec_from_file_location("bridge_tools_mutate", ROOT / "tools" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


MUTATE = _mutate_module()


@pytest.mark.parametrize("mutation", MUTATE.MUTATIONS, ids=lambda m: m.name)
def test_mutation_applies_once(mutation):
    text = (ROOT / mutation.path).read_text()
    for old, new in mutation.edits:
        assert text.count(old) == 1, f"{mutation.name}: {old!r} occurs {text.count(old)} times in {mutation.path}"
        assert old != new
        text = text.replace(old, new)
    if mutation.target is not None:
        family, _ = mutation.target
        assert (ROOT / MUTATE.KIT[family]).is_file()


def test_mutations_have_distinct_names():
    names = [m.name for m in MUTATE.MUTATIONS]
    assert len(names) == len(set(names))
