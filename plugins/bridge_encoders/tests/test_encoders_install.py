"""``pip install bridge-core bridge-encoders`` from wheels into a fresh virtual environment (torch first, from the
pinned constraints, then the two wheels and their dependencies): ``bridge plugins`` lists bridge-encoders with its
architectures, and a saved tiny BERT loads and caches its hooks there, with no other family installed."""

import json
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from bridge.testing import examples_of, save_tiny_model
from bridge_encoders import BertAdapter

ROOT = Path(__file__).resolve().parents[3]


def run(args, **kwargs):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_wheels_of_core_and_encoders_install_into_a_fresh_environment(tmp_path):
    wheels = tmp_path / "wheels"
    for distribution in (ROOT / "core", ROOT / "plugins" / "bridge_encoders"):
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, distribution])
    built = sorted(p.name for p in wheels.glob("*.whl"))
    assert [name.split("-")[0] for name in built] == ["bridge_core", "bridge_encoders"], built
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    run([*pip, "torch==2.13.0"])
    run([*pip, "-c", ROOT / "constraints.txt", *sorted(wheels.glob("*.whl"))])
    listed = run([env_dir / "bin" / "bridge", "plugins", "--json"])
    rows = {row["distribution"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"bridge-encoders"}, rows
    assert rows["bridge-encoders"]["status"] == "loaded"
    assert {"BertForMaskedLM", "T5ForConditionalGeneration"} <= set(rows["bridge-encoders"]["architectures"])
    bert = save_tiny_model(examples_of(BertAdapter).example_config("BertForMaskedLM"), tmp_path / "bert")
    script = f"""
        import bridge
        model = bridge.load({str(bert)!r})
        logits, cache = model.run_with_cache("The cat sat", names_filter=lambda n: n.endswith("hook_pattern"))
        print("LOADED", type(model.adapter).__module__, tuple(cache["blocks.1.attn.hook_pattern"].shape))
    """
    out = run([python, "-c", textwrap.dedent(script)], cwd=tmp_path)
    assert "LOADED bridge_encoders.encoders (1, 4, " in out.stdout
