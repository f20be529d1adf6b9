"""``generate`` checks its input as ``forward`` does: misspelt keywords (with the close matches), token ids out of
range, float or 3-D integer tokens, prompts longer than the context, bad masks, an empty list of stop tokens.
Each is a ``BridgeError`` raised before the HF model runs."""

import pytest
import torch

from bridge.kernel.errors import BadInputError, BridgeError, UnknownArgumentError

PROMPT = torch.tensor([[0, 5, 17, 33, 9]])


def generate(model, input=PROMPT, **kwargs):
    return model.generate(input, **{"max_new_tokens": 2, "do_sample": False, "verbose": False, **kwargs})


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("max_new_token", "max_new_tokens"), ("temprature", "temperature"), ("do_sampel", "do_sample"),
     ("repetition_penality", "repetition_penalty"), ("names_filters", "names_filter")],
)  # fmt: skip
def test_a_misspelt_keyword_is_refused_with_the_close_match(gpt2, typo, meant):
    with pytest.raises(UnknownArgumentError, match=rf"generate.*{typo}.*Did you mean '{meant}'"):
        generate(gpt2, **{typo: 1})


def test_generation_config_keywords_still_pass(gpt2):
    plain = generate(gpt2, max_new_tokens=4)
    penalised = generate(gpt2, max_new_tokens=4, repetition_penalty=1.0, min_new_tokens=4)
    assert torch.equal(plain, penalised)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (torch.tensor([[0, 5, 128]]), r"token id 128 is out of range.*0\.\.127"),
        (torch.tensor([[0, -1, 3]]), r"token id -1 is out of range"),
        (torch.tensor([[0.0, 5.0, 3.0]]), r"integer tensor of token ids, got dtype torch.float32"),
        (torch.zeros(1, 3, 2, dtype=torch.long), r"embeddings.*float.*got .*torch.int64"),
        (torch.zeros(1, 0, dtype=torch.long), r"hold no token"),
    ],
)
def test_bad_tokens_are_refused(gpt2, tokens, message):
    with pytest.raises(BadInputError, match=message):
        generate(gpt2, tokens)


def test_a_prompt_longer_than_the_context(gpt2):
    n_ctx = gpt2.cfg.n_ctx
    with pytest.raises(BadInputError, match=rf"{n_ctx + 1} positions.*n_ctx={n_ctx}"):
        generate(gpt2, torch.ones(1, n_ctx + 1, dtype=torch.long))
    with pytest.raises(BadInputError, match=rf"{n_ctx - 2} prompt positions and max_new_tokens=5.*n_ctx={n_ctx}"):
        generate(gpt2, torch.ones(1, n_ctx - 2, dtype=torch.long), max_new_tokens=5)
    assert generate(gpt2, torch.ones(1, n_ctx - 2, dtype=torch.long), max_new_tokens=2).shape == (1, n_ctx)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.tensor([[1, 2, 1, 1, 1]]), r"0 \(padding\) and 1 \(real token\) only"),
        (torch.zeros(1, 5, dtype=torch.long), r"masks every token of sequence\(s\) \[0\]"),
        (torch.ones(1, 4, dtype=torch.long), r"attention_mask has shape \(1, 4\)"),
        ([1, 1, 1, 1, 1], r"attention_mask must be a tensor"),
    ],
)
def test_bad_masks_are_refused(gpt2, mask, message):
    with pytest.raises(BadInputError, match=message):
        generate(gpt2, attention_mask=mask)


@pytest.mark.parametrize("eos", [[], [1, "x"], 1.5, [-1]])
def test_bad_stop_tokens_are_refused(gpt2, eos):
    with pytest.raises(BridgeError, match="eos_token_id"):
        generate(gpt2, eos_token_id=eos)


def test_a_one_element_list_of_stop_tokens_works(gpt2):
    assert generate(gpt2, eos_token_id=[3]).shape[0] == 1
