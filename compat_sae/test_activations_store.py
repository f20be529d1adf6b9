"""SAELens's ``ActivationsStore`` on a Bridge: the tokens it cuts from a text or a pre-tokenized
corpus are the windows worked out by hand, and the activations it reads through the bridge's
``run_with_cache`` are the HF model's own hidden states for those tokens."""

import pytest
import torch
from sae_lens import ActivationsStore

from compat_sae.conftest import HOOK, LAYER
from compat_sae.corpus import CONTEXT, pretokenized_dataset, pretokenized_rows, sentences, text_dataset, text_windows
from compat_sae.reference import hf_block_input, hf_block_output

BATCH = 4  # prompts per model forward
N_BATCHES = 3


def make_store(family, dataset, **overrides) -> ActivationsStore:
    """The store built directly from its constructor, with the bridge as its model."""
    settings = dict(
        model=family.model,
        dataset=dataset,
        streaming=False,
        hook_name=HOOK,
        hook_head_index=None,
        context_size=CONTEXT,
        d_in=family.d_model,
        n_batches_in_buffer=2,
        total_training_tokens=BATCH * N_BATCHES * CONTEXT,
        store_batch_size_prompts=BATCH,
        train_batch_size_tokens=16,
        prepend_bos=True,
        normalize_activations="none",
        device=torch.device("cpu"),
        dtype="float32",
    )
    return ActivationsStore(**{**settings, **overrides})


def corpus(family, kind: str):
    """(dataset, the windows ``[n, CONTEXT]`` SAELens should cut from it, by hand)."""
    if kind == "text":
        texts = sentences(40, seed=1)
        return text_dataset(40, seed=1), text_windows(family.tokenizer, texts)
    return pretokenized_dataset(family.tokenizer, 40, seed=1), pretokenized_rows(family.tokenizer, 40, seed=1)


@pytest.mark.filterwarnings("ignore:Dataset is not tokenized:UserWarning")
@pytest.mark.filterwarnings("ignore:The training dataset contains fewer samples:UserWarning")
@pytest.mark.parametrize("kind", ["text", "pretokenized"])
def test_store_tokens_and_activations_match_hf(family, kind):
    dataset, windows = corpus(family, kind)
    assert len(windows) >= BATCH * N_BATCHES
    store = make_store(family, dataset)
    for i in range(N_BATCHES):
        tokens = store.get_batch_tokens()  # [BATCH, CONTEXT]
        torch.testing.assert_close(tokens, windows[i * BATCH : (i + 1) * BATCH], rtol=0, atol=0)
        expected = hf_block_output(family.hf, tokens, LAYER)  # [BATCH, CONTEXT, d_model]
        torch.testing.assert_close(store.get_activations(tokens), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Dataset is not tokenized:UserWarning")
@pytest.mark.filterwarnings("ignore:The training dataset contains fewer samples:UserWarning")
@pytest.mark.parametrize("kind", ["text", "pretokenized"])
def test_store_raw_batches_match_hf_in_order(family, kind):
    """``get_raw_llm_batch``: what feeds the training buffer, flattened ``[BATCH * CONTEXT, d_model]``."""
    dataset, windows = corpus(family, kind)
    store = make_store(family, dataset)
    for i in range(2):
        activations, token_ids = store.get_raw_llm_batch()
        tokens = windows[i * BATCH : (i + 1) * BATCH]
        torch.testing.assert_close(token_ids, tokens.flatten(), rtol=0, atol=0)
        expected = hf_block_output(family.hf, tokens, LAYER).flatten(0, 1)
        torch.testing.assert_close(activations, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:The training dataset contains fewer samples:UserWarning")
def test_training_batches_are_hf_activations_without_special_tokens(family):
    """The shuffled training stream (``next(store)``): every row is the HF activation of one
    non-special token of the corpus, and no special token's activation is in it."""
    dataset, windows = corpus(family, "pretokenized")
    store = make_store(family, dataset, exclude_special_tokens=family.special)
    seen = windows[: BATCH * 4]  # the buffer fills from the first windows, in order
    reference = hf_block_output(family.hf, seen, LAYER)  # [n, CONTEXT, d_model]
    keep = ~torch.isin(seen, family.special)
    batch = next(store)  # [train_batch_size_tokens, d_model]
    assert batch.shape == (16, family.d_model)
    distance = torch.cdist(batch.double(), reference[keep].double())  # to every kept token's activation
    assert distance.min(dim=1).values.max() < 1e-4
    special_rows = reference[~keep].double()
    assert torch.cdist(batch.double(), special_rows).min() > 1e-2


@pytest.mark.filterwarnings("ignore:The training dataset contains fewer samples:UserWarning")
def test_multi_hook_store_reads_each_hook_from_one_forward(family):
    """``from_config_multi_hook`` (what ``MultiSAETrainingRunner`` trains from): two hook points of one
    forward pass, each the HF model's own tensor (block 0's input and output)."""
    dataset, windows = corpus(family, "pretokenized")
    hooks = [f"blocks.{LAYER}.hook_resid_pre", HOOK]
    store = ActivationsStore.from_config_multi_hook(
        family.model,
        dataset=dataset,
        hook_names=hooks,
        hook_d_ins=dict.fromkeys(hooks, family.d_model),
        streaming=False,
        context_size=CONTEXT,
        store_batch_size_prompts=BATCH,
        train_batch_size_tokens=16,
        n_batches_in_buffer=2,
        total_training_tokens=BATCH * N_BATCHES * CONTEXT,
    )
    tokens = store.get_batch_tokens()
    torch.testing.assert_close(tokens, windows[:BATCH], rtol=0, atol=0)
    activations = store.get_multi_hook_activations(tokens)  # {hook: [BATCH, CONTEXT, d_model]}
    expected = {hooks[0]: hf_block_input(family.hf, tokens, LAYER), HOOK: hf_block_output(family.hf, tokens, LAYER)}
    assert set(activations) == set(hooks)
    for hook in hooks:
        torch.testing.assert_close(activations[hook], expected[hook], rtol=1e-5, atol=1e-5)
