"""Which special token goes where. The tiny tokenizer gives BOS, EOS and padding ids of their own (``<pad>`` 0,
``<|bos|>`` 1, ``<|endoftext|>`` 2), so a mix-up (EOS prepended instead of BOS, generation stopping at BOS, padding
with BOS) is a wrong token here, as it is on every real model whose BOS is not its EOS (Llama's). Tokenizers without
a BOS or without a padding token are covered too. Expected sequences come from HF's own ``generate``."""

from __future__ import annotations

import pytest
import torch
from public_api_adapters import GPT2Examples, LlamaExamples

import bridge
from bridge.kernel import TINY_BOS_ID, TINY_EOS_ID, TINY_PAD_ID
from bridge.testing import build_tiny_model, make_pair, tiny_tokenizer


def test_the_tiny_tokenizer_gives_each_special_token_its_own_id():
    tokenizer = tiny_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (
        TINY_PAD_ID,
        TINY_BOS_ID,
        TINY_EOS_ID,
    )
    assert len({TINY_PAD_ID, TINY_BOS_ID, TINY_EOS_ID}) == 3
    assert tiny_tokenizer(bos=False).bos_token_id is None and tiny_tokenizer(pad=False).pad_token_id is None


def model_with(**tokenizer_options):
    return bridge.wrap(build_tiny_model(GPT2Examples.example_config()), tiny_tokenizer(**tokenizer_options))


@pytest.mark.parametrize("side", ["left", "right"])
def test_to_tokens_prepends_bos_and_pads_with_the_pad_token(side):
    model = model_with()
    tokens = model.to_tokens(["the cat sat on the mat", "hi"], padding_side=side)
    assert tokens[:, 0 if side == "right" else -1].tolist() != [TINY_PAD_ID] * 2
    lengths = [
        len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in ("the cat sat on the mat", "hi")
    ]
    short = tokens[1]
    real = short[: lengths[1]] if side == "right" else short[-lengths[1] :]
    padding = short[lengths[1] :] if side == "right" else short[: -lengths[1]]
    assert real[0].item() == TINY_BOS_ID and tokens[0, 0].item() == TINY_BOS_ID
    assert padding.tolist() == [TINY_PAD_ID] * len(padding) and len(padding) > 0
    assert TINY_EOS_ID not in tokens.tolist()[0] + tokens.tolist()[1]


def test_a_tokenizer_without_bos_prepends_nothing():
    model = model_with(bos=False)
    tokens = model.to_tokens("the cat", prepend_bos=True)
    assert tokens[0].tolist() == model.tokenizer("the cat", add_special_tokens=False)["input_ids"]


def test_a_tokenizer_without_padding_pads_with_eos():
    model = model_with(pad=False)
    tokens = model.to_tokens(["the cat sat on the mat", "hi"])
    assert tokens[1, -1].item() == TINY_EOS_ID and tokens[1, 0].item() == TINY_BOS_ID


def greedy_rows_containing(pair, token: int, rows: int = 64, new: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts ``[n, 4]`` of ordinary tokens whose greedy continuation by HF contains ``token``, and HF's output
    for them when only EOS stops generation."""
    prompts = torch.randint(4, 128, (rows, 4), generator=torch.Generator().manual_seed(0))
    free = pair.reference.generate(
        prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new, do_sample=False, eos_token_id=[]
    )
    chosen = (free[:, 4:] == token).any(-1)
    assert chosen.any(), f"no greedy continuation contains token {token}"
    return prompts[chosen][:4]


def test_generate_stops_at_eos_and_not_at_bos():
    """A continuation that produces BOS goes on past it; one that produces EOS ends there: both as HF's generate
    with the tokenizer's EOS (the bridge pads finished rows with EOS, as TransformerLens does)."""
    for examples, token in ((GPT2Examples, TINY_BOS_ID), (LlamaExamples, TINY_EOS_ID)):
        pair = make_pair(examples)
        prompts = greedy_rows_containing(pair, token)
        got = pair.bridge.generate(prompts, max_new_tokens=24, do_sample=False, verbose=False)
        expected = pair.reference.generate(
            prompts,
            attention_mask=torch.ones_like(prompts),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=TINY_EOS_ID,
            pad_token_id=TINY_EOS_ID,
        )
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        if token == TINY_BOS_ID:
            assert got.shape[1] == 4 + 24  # no row stopped at its BOS
        else:
            first = (got[0, 4:] == TINY_EOS_ID).nonzero()[0].item()
            assert (got[0, 4 + first :] == TINY_EOS_ID).all()
