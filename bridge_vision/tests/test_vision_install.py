"""Installed on their own: with only bridge-core and bridge-vision loaded, a saved CLIP vision model loads
(with its image processor) and a GPT-2 directory names the plugin to install; and built as wheels into a fresh
venv, ``bridge.load`` of a CLIP vision directory finds the plugin through its entry point."""

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from transformers import GPT2Config

from bridge.testing import run_isolated
from bridge_vision import CLIPVisionAdapter
from bridge_vision.testing import save_example_model

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import numpy as np
from PIL import Image
import bridge
print("PLUGINS", sorted(p.distribution for p in bridge.get_registry().plugins if p.status == "loaded"))
model = bridge.load({clip!r})
image = Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8))
pooled, cache = model.run_with_cache(image, return_type="pooled", names_filter=lambda n: n.endswith("hook_pattern"))
pattern = cache["blocks.1.attn.hook_pattern"]
print("LOADED", model.cfg.architecture, type(model.adapter).__module__, tuple(pattern.shape))
try:
    bridge.load({gpt2!r})
except bridge.UnknownArchitectureError as err:
    print("ERROR", err)
"""


@pytest.fixture
def dirs(tmp_path):
    clip = save_example_model(CLIPVisionAdapter, "CLIPVisionModel", tmp_path / "clip")
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    GPT2Config(architectures=["GPT2LMHeadModel"]).save_pretrained(gpt2)
    return str(clip), str(gpt2)


def check_output(result: subprocess.CompletedProcess, plugins: str) -> None:
    assert result.returncode == 0, result.stderr
    assert f"PLUGINS {plugins}" in result.stdout
    assert "LOADED CLIPVisionModel bridge_vision.adapters (1, 4, 17, 17)" in result.stdout
    error = next(line for line in result.stdout.splitlines() if line.startswith("ERROR"))
    assert "GPT2LMHeadModel" in error and "bridge-gpt2" in error


def test_only_bridge_vision_loads_clip_and_names_bridge_gpt2_for_gpt2(dirs):
    clip, gpt2 = dirs
    result = run_isolated(textwrap.dedent(SCRIPT.format(clip=clip, gpt2=gpt2)), "bridge-vision")
    check_output(result, "['bridge-vision']")


@pytest.mark.slow
def test_wheels_in_a_fresh_venv_find_the_plugin(dirs, tmp_path):
    """bridge-core and bridge-vision built as wheels and installed (no editable paths) into a fresh venv; their
    third-party dependencies (torch, transformers…) come from this environment's site-packages through a .pth
    line, so nothing is downloaded."""
    clip, gpt2 = dirs
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels)]
    subprocess.run([*build, str(REPO / "core"), str(REPO / "bridge_vision")], check=True, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", *sorted(wheels.glob("*.whl"))]
    subprocess.run(install, check=True, capture_output=True)
    script = textwrap.dedent(SCRIPT.format(clip=clip, gpt2=gpt2))
    where = "import bridge, bridge_vision; print('FROM', bridge.__file__, bridge_vision.__file__)\n"
    result = subprocess.run(
        [python, "-c", where + script],
        capture_output=True,
        text=True,
        # the dependency path also holds this checkout's other editable plugins, which cannot import there
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "BRIDGE_LOAD_PLUGINS": "bridge-vision"},
        timeout=300,
    )
    check_output(result, "['bridge-vision']")
    origin = next(line for line in result.stdout.splitlines() if line.startswith("FROM"))
    assert origin.count(str(venv)) == 2, origin  # both packages from the wheels, not the editable sources
