"""The ``bridge`` console script, run as a user runs it: a subprocess of the installed environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.testing import examples_of

BRIDGE = str(Path(sys.executable).parent / "bridge")


def run(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(env_extra or {})
    return subprocess.run([BRIDGE, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from bridge.testing import save_tiny_model
    from bridge_gpt2 import GPT2Adapter

    return save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path_factory.mktemp("cli-gpt2"))


def test_help_lists_commands_and_environment():
    result = run("--help")
    assert result.returncode == 0
    for word in ("plugins", "inspect", "demo", "BRIDGE_LOAD_PLUGINS", "HF_HUB_OFFLINE"):
        assert word in result.stdout


def test_inspect_prints_every_hook_with_shapes_and_marks_opt_in(gpt2_dir):
    result = run("inspect", str(gpt2_dir))
    assert result.returncode == 0, result.stderr
    assert "GPT2LMHeadModel (GPT2Adapter): 2 layers, 4 heads" in result.stdout
    lines = {
        line.split()[-2] if line.startswith("  *") else line.split()[0]: line for line in result.stdout.splitlines()[2:]
    }
    assert lines["blocks.1.attn.hook_pattern"].split()[-1] == "1x4x4x4"
    assert lines["blocks.0.mlp.hook_pre"].split()[-1] == "1x4x128"
    assert lines["blocks.1.attn.hook_result"].startswith("  *")
    as_json = json.loads(run("inspect", str(gpt2_dir), "--json").stdout)
    shapes = {row["name"]: row["shape"] for row in as_json["hooks"]}
    assert shapes["blocks.0.attn.hook_z"] == [1, 4, 4, 8] and shapes["blocks.0.attn.hook_result"] is None
    assert as_json["config"]["n_layers"] == 2


def test_user_mistakes_are_one_line_and_a_hint(tmp_path, gpt2_dir):
    missing = run("inspect", str(tmp_path / "missing"))
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert missing.stderr.startswith("bridge inspect: error: no model directory at")
    assert "hint:" in missing.stderr
    unknown = run("inspect", str(gpt2_dir), env_extra={"BRIDGE_LOAD_PLUGINS": ""})
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "pip install bridge-gpt2" in unknown.stderr

