"""Plugin discovery across distributions, in fresh processes: installed entry points, a broken
plugin distribution, BRIDGE_LOAD_PLUGINS isolation, the CLI and the pytest plugin."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.testing import examples_of

BIN = Path(sys.executable).parent


def run(args, env_extra=None, cwd=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "PYTHONPATH"))}
    env.update(env_extra or {})
    return subprocess.run(args, env=env, capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory):
    """A directory holding distributions whose ``bridge`` entry point raises ImportError or calls
    ``sys.exit`` on import, and one distribution with two working entry points."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "bridge_broken-0.0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bridge-broken\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text("[bridge]\nbroken = bridge_broken_plugin\n")
    (site / "bridge_broken_plugin.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    exits = site / "bridge_exits-0.0.2.dist-info"
    exits.mkdir()
    (exits / "METADATA").write_text("Metadata-Version: 2.1\nName: bridge-exits\nVersion: 0.0.2\n")
    (exits / "entry_points.txt").write_text("[bridge]\nexits = bridge_exits_plugin\n")
    (site / "bridge_exits_plugin.py").write_text("import sys\nsys.exit('plugin called sys.exit')\n")
    multi = site / "bridge_multi-0.0.3.dist-info"
    multi.mkdir()
    (multi / "METADATA").write_text("Metadata-Version: 2.1\nName: bridge-multi\nVersion: 0.0.3\n")
    (multi / "entry_points.txt").write_text("[bridge]\nfirst = bridge_multi_first\nsecond = bridge_multi_second\n")
    for ep in ("first", "second"):
        (site / f"bridge_multi_{ep}.py").write_text(
            textwrap.dedent(
                f"""
                import bridge
                from bridge_gpt2 import GPT2Adapter

                class Multi{ep.title()}(GPT2Adapter):
                    architectures = ("Multi{ep.title()}ForCausalLM",)
                    model_types = ()

                @bridge.hookimpl
                def register_adapters(register):
                    register(Multi{ep.title()})
                """
            )
        )
    return site


def test_first_party_plugin_found_through_its_installed_entry_point():
    from importlib.metadata import entry_points

    import bridge

    eps = [ep for ep in entry_points(group="bridge") if ep.dist.name == "bridge-gpt2"]
    assert eps and eps[0].value == "bridge_gpt2.plugin"
    infos = {p.distribution: p for p in bridge.reload_plugins().plugins}
    assert infos["bridge-gpt2"].status == "loaded"
    assert "GPT2LMHeadModel" in infos["bridge-gpt2"].architectures


def test_broken_plugin_is_skipped_with_a_warning_and_loading_still_works(broken_site, tmp_path):
    from bridge.testing import save_tiny_model
    from bridge_gpt2 import GPT2Adapter

    directory = save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path / "gpt2")
    script = textwrap.dedent(
        f"""
        import warnings, bridge
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = bridge.load({str(directory)!r})
        print("LOADED", model.cfg.architecture)
        for w in caught:
            print("WARN", w.category.__name__, w.message)
        """
    )
    result = run([sys.executable, "-c", script], {"PYTHONPATH": str(broken_site)})
    assert result.returncode == 0, result.stderr
    assert "LOADED GPT2LMHeadModel" in result.stdout
    assert "WARN PluginLoadWarning bridge: skipping plugin bridge-broken" in result.stdout
    assert "this plugin is broken on purpose" in result.stdout
    assert "WARN PluginLoadWarning bridge: skipping plugin bridge-exits" in result.stdout
    assert "SystemExit: plugin called sys.exit" in result.stdout


def test_cli_plugins_lists_loaded_and_broken(broken_site):
    result = run([str(BIN / "bridge"), "plugins"], {"PYTHONPATH": str(broken_site)})
    assert result.returncode == 0, result.stderr
    assert "bridge-gpt2 0.1.0  [loaded]" in result.stdout
    assert "GPTNeoXForCausalLM" in result.stdout
    assert "bridge-broken 0.0.1  [broken]" in result.stdout
    assert "ImportError: this plugin is broken on purpose" in result.stdout
    assert "bridge-exits 0.0.2  [broken]" in result.stdout and "SystemExit: plugin called sys.exit" in result.stdout
    assert (
        "bridge-multi 0.0.3  [loaded]\n  entry point: first = bridge_multi_first\n"
        "  architectures: MultiFirstForCausalLM\n  hooks: register_adapters\n"
        "bridge-multi 0.0.3  [loaded]\n  entry point: second = bridge_multi_second\n"
        "  architectures: MultiSecondForCausalLM\n"
    ) in result.stdout
    as_json = run([str(BIN / "bridge"), "plugins", "--json"], {"PYTHONPATH": str(broken_site)})
    rows = {row["distribution"]: row for row in json.loads(as_json.stdout)}
    assert rows["bridge-gpt2"]["hooks"] == ["bench_configs", "register_adapters", "register_examples"]
    assert rows["bridge-broken"]["status"] == "broken"
    assert rows["bridge-exits"]["status"] == "broken"
    multi = [row for row in json.loads(as_json.stdout) if row["distribution"] == "bridge-multi"]
    assert [(row["status"], row["architectures"]) for row in multi] == [
        ("loaded", ["MultiFirstForCausalLM"]),
        ("loaded", ["MultiSecondForCausalLM"]),
    ]


def test_load_plugins_env_isolates_distributions(tmp_path):
    """With only bridge-core active, a GPT-2 checkpoint names bridge-gpt2 in its error."""
    from bridge.testing import save_tiny_model
    from bridge_gpt2 import GPT2Adapter

    directory = save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path / "gpt2")
    script = f"import bridge; bridge.load({str(directory)!r})"
    result = run([sys.executable, "-c", script], {"BRIDGE_LOAD_PLUGINS": ""})
    assert result.returncode != 0
    assert "UnknownArchitectureError" in result.stderr
    assert "pip install bridge-gpt2" in result.stderr and "Installed plugins: none" in result.stderr
    listed = run([str(BIN / "bridge"), "plugins"], {"BRIDGE_LOAD_PLUGINS": ""})
    assert "No bridge plugins loaded" in listed.stdout and "disabled by BRIDGE_LOAD_PLUGINS" in listed.stdout
    listed = run([str(BIN / "bridge"), "plugins", "--all"], {"BRIDGE_LOAD_PLUGINS": ""})
    assert "bridge-gpt2 0.1.0  [disabled]" in listed.stdout and "not in BRIDGE_LOAD_PLUGINS" in listed.stdout
    allowed = run([sys.executable, "-c", script + "; print('OK')"], {"BRIDGE_LOAD_PLUGINS": "bridge_gpt2"})
    assert "OK" in allowed.stdout, allowed.stderr


def test_pytest_plugin_runs_the_conformance_kit(tmp_path):
    result = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--bridge-conformance",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "GPT2LMHeadModel and native and logits_match",
            "--rootdir",
            str(tmp_path),
        ],
        cwd=tmp_path,
    )
    assert "1 passed" in result.stdout, result.stdout + result.stderr
