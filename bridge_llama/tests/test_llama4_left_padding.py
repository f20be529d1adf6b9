"""Llama 4 with left padding: each row of a left-padded batch gets the logits it has alone, as the README promises
for every family. HF computes the NoPE layers' attention temperature from the padded index, not the position, so
HF's own batched output differs; the bridge computes it from the positions it passes (``position_ids``).

Reference: the same row run alone (no padding), where index and position agree."""

import pytest
import torch

from bridge_llama import Llama4Adapter


@pytest.fixture
def model(pair_for):
    return pair_for(Llama4Adapter).bridge


def rows(model, lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, model.cfg.d_vocab, (n,), generator=generator) for n in lengths]


def left_padded(rows, pad):
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, width - len(row) :], mask[i, width - len(row) :] = row, 1
    return tokens, mask


def test_a_left_padded_row_has_the_logits_it_has_alone(model):
    batch = rows(model, [5, 11, 8])
    tokens, mask = left_padded(batch, model.tokenizer.pad_token_id)
    with torch.no_grad():
        padded = model(tokens, attention_mask=mask)
        for i, row in enumerate(batch):
            alone = model(row[None])
            torch.testing.assert_close(padded[i, -len(row) :], alone[0], atol=1e-5, rtol=0)  # fp32, |logits| ~ 3


def test_hooks_do_not_change_it(model):
    batch = rows(model, [4, 9], seed=1)
    tokens, mask = left_padded(batch, model.tokenizer.pad_token_id)
    with torch.no_grad():
        padded, cache = model.run_with_cache(tokens, attention_mask=mask)
        alone, alone_cache = model.run_with_cache(batch[0][None])
    torch.testing.assert_close(padded[0, -4:], alone[0], atol=1e-5, rtol=0)
    q = "blocks.1.attn.hook_rot_q"  # the NoPE layer: q times the temperature of each position
    torch.testing.assert_close(cache[q][0, -4:], alone_cache[q][0], atol=1e-5, rtol=0)


def test_generation_from_left_padded_prompts_is_each_prompt_alone(model):
    """Every step's logits (HF's ``output_logits``), on the prompt and with the KV cache, as each prompt alone."""
    batch = rows(model, [3, 7], seed=2)
    tokens, mask = left_padded(batch, model.tokenizer.pad_token_id)
    options = {"max_new_tokens": 4, "do_sample": False, "verbose": False, "stop_at_eos": False}
    extra = {"return_dict_in_generate": True, "output_logits": True}
    together = model.generate(tokens, attention_mask=mask, **options, **extra)
    for i, row in enumerate(batch):
        alone = model.generate(row[None], **options, **extra)
        assert together.sequences[i, -len(row) - 4 :].tolist() == alone.sequences[0].tolist()
        for step, (batched, single) in enumerate(zip(together.logits, alone.logits, strict=True)):
            torch.testing.assert_close(batched[i], single[0], atol=1e-5, rtol=0, msg=f"step {step}")
