"""``bridge.kernel.known`` names the distribution of every first-party architecture: it is what
``tools/known_table.py`` writes from the installed plugins (so a new adapter without its row fails here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def generator():
    spec = importlib.util.spec_from_file_location("known_table", ROOT / "tools" / "known_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_known_table_is_what_the_installed_plugins_register():
    tool = generator()
    assert tool.KNOWN.read_text() == tool.render(*tool.tables()), "run `python tools/known_table.py`"


def test_the_check_fails_on_a_stale_table(tmp_path, monkeypatch, capsys):
    tool = generator()
    architectures, model_types = tool.tables()
    stale = tmp_path / "known.py"
    stale.write_text(tool.render({k: v for k, v in architectures.items() if k != "GPT2LMHeadModel"}, model_types))
    monkeypatch.setattr(tool, "KNOWN", stale)
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    assert tool.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("architectures", "model_type", "plugin"),
    [(["GPT2LMHeadModel"], None, "bridge-gpt2"), (["NoSuchModel"], "llama", "bridge-llama")],
)
def test_plugin_for_reads_architecture_then_model_type(architectures, model_type, plugin):
    from bridge.kernel import known

    assert known.plugin_for(architectures, model_type) == plugin
    assert known.plugin_for(["NoSuchModel"], "no-such-type") is None
