"""``bridge demo --all``: the study on every model under a directory, one table row each and one figure.

On three tiny untrained models (attention, SSM, and a hybrid of both with MLP and MoE blocks), through the command
line's ``main`` (the console script itself is exercised in tests/test_cli.py); the numbers are the study's
(tests/test_circuits_shipped.py checks them on the trained models), here only their presence."""

import contextlib
import io

import pytest

from bridge.app import cli
from bridge.testing import examples_of, save_tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from bridge_llama import LlamaAdapter
    from bridge_mamba import Mamba2Adapter, NemotronHAdapter

    root = tmp_path_factory.mktemp("study")
    save_tiny_model(examples_of(LlamaAdapter).example_config(), root / "induction-llama")
    save_tiny_model(examples_of(Mamba2Adapter).example_config(), root / "induction-mamba2")
    save_tiny_model(examples_of(NemotronHAdapter).example_config(), root / "hybrid-induction")
    (root / "not-a-model").mkdir()
    return root


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_demo_all_prints_one_table_and_draws_one_figure(models, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "study.png"
    code, out, err = run("demo", "--all", "--models", str(models), "--png", str(png), "--batch", "2", "--length", "6")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| ") and "induction" in line.split(" | ")[0]]
    assert [row.split(" | ")[0] for row in rows] == ["| hybrid-induction", "| induction-llama", "| induction-mamba2"]
    assert "what carries induction" in out and "faithfulness" in out
    assert "induction head" in rows[1] and "SSM heads" in rows[2]
    assert "induction head" in rows[0] and "SSM heads" in rows[0]  # the hybrid: attention and SSM blocks
    assert png.stat().st_size > 10_000


def test_demo_all_without_models_says_so(tmp_path):
    code, _, err = run("demo", "--all", "--models", str(tmp_path))
    assert code == 2
    assert "no induction-* or *-induction model directories" in err
