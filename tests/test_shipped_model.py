"""The shipped induction model and the analysis code, checked together (thresholds measured with margin:
top induction score 0.72, previous-token 0.92, ablation +0.89 loss, control +0.10)."""

from pathlib import Path

import pytest

import bridge
from bridge.app.induction import head_scores, repeated_half_loss, repeated_tokens, zero_head

MODEL = Path(__file__).parents[1] / "examples" / "models" / "induction-2l"


@pytest.fixture(scope="module")
def setup():
    model = bridge.load(MODEL)
    length = 40
    tokens = repeated_tokens(16, length, (max(model.tokenizer.all_special_ids) + 1, model.cfg.d_vocab), 0, seed=7)
    return model, tokens, length, head_scores(model, tokens, length)


def test_classic_induction_and_previous_token_heads(setup):
    *_, scores = setup
    layer, head = scores.top("induction")
    assert layer == 1 and scores.induction[layer, head] > 0.55
    prev_layer, prev_head = scores.top("previous_token")
    assert prev_layer == 0 and scores.previous_token[prev_layer, prev_head] > 0.75


def test_ablating_the_induction_head_raises_repeated_loss_and_a_control_does_not(setup):
    model, tokens, length, scores = setup
    layer, head = scores.top("induction")
    control = int(scores.induction[layer].argmin())
    base = repeated_half_loss(model, tokens, length)
    ablated = repeated_half_loss(model, tokens, length, [(f"blocks.{layer}.attn.hook_z", zero_head(head))])
    controlled = repeated_half_loss(model, tokens, length, [(f"blocks.{layer}.attn.hook_z", zero_head(control))])
    assert base < 1.5
    assert ablated > base + 0.5
    assert controlled < base + 0.3


def test_demo_command_names_the_heads_and_writes_the_png(tmp_path):
    import subprocess
    import sys

    png = tmp_path / "pattern.png"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "bridge"), "demo", "--model", str(MODEL), "--png", str(png)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Induction head:      1." in result.stdout and "Previous-token head: 0." in result.stdout
    assert png.exists() and png.stat().st_size > 1000
