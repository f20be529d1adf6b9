"""core/README.md's recipes run as written on the shipped model, and their numbers are the model's own."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "models" / "induction-2l"


def recipe_blocks() -> list[str]:
    text = (ROOT / "core" / "README.md").read_text()
    section = text.split("## Recipes on the shipped model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def recipes():
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(printed):
        for block in recipe_blocks():
            exec(compile(block, "core/README.md", "exec"), namespace)
    namespace["printed"] = printed.getvalue().splitlines()
    return namespace


def test_the_readme_has_the_set_up_and_three_recipes():
    assert len(recipe_blocks()) == 4


def test_logit_lens_last_row_is_the_hf_models_prediction(recipes):
    model, lens = recipes["model"], recipes["lens"]
    tokens = model.to_tokens(recipes["prompt"])
    hf_logits = model.hf_model(tokens).logits[:, -1]  # the processed HF model, no bridge involved
    torch.testing.assert_close(lens[-1], hf_logits, atol=1e-4, rtol=1e-4)
    assert recipes["printed"][0] == "{'0_pre': 't99', '1_pre': 't99', 'final_post': 't3'}"


def test_head_attributions_sum_to_the_heads_share_of_the_logit_difference(recipes):
    model, cache, attrs = recipes["model"], recipes["cache"], recipes["attrs"]
    t3, t15 = model.to_single_token("t3"), model.to_single_token("t15")
    z = cache["blocks.1.attn.hook_z"][:, -1]  # [batch, head, d_head]
    scale = cache["ln_final.hook_scale"][:, -1]  # [batch, 1]
    direction = model.hf_model.lm_head.weight[t3] - model.hf_model.lm_head.weight[t15]  # [d_model]
    w_o = model.hf_model.transformer.h[1].attn.c_proj.weight.view(4, 32, 128)  # Conv1D [d_in, d_out] by head
    # center_writing_weights made each head's output mean-zero, so LayerNorm's centring is a no-op on it
    per_head = torch.einsum("bhd,hdm,m->hb", z, w_o, direction) / scale[:, 0]
    torch.testing.assert_close(attrs[4:], per_head, atol=1e-4, rtol=1e-4)
    assert "L1H1" in recipes["printed"][1].split("'")[1]


def test_steering_changes_the_greedy_continuation_as_printed(recipes):
    assert recipes["printed"][2:] == ["t1 t2 t9 t1 t2 t9 t1 t2", "t1 t2 t9 t3 t3 t3 t3 t3"]
