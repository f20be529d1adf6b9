"""Corpora made here (no hub access), and the context windows SAELens should cut from them, by hand.

A text corpus is rows of made-up sentences over the words the tiny test tokenizer was trained on;
a pre-tokenized corpus is rows of ``CONTEXT`` token ids, each ``[BOS] + CONTEXT - 1`` tokens of
the same kind of text. Both are ``datasets.Dataset`` objects, passed to SAELens directly.
"""

from __future__ import annotations

import random

import torch
from datasets import Dataset

CONTEXT = 16  # tokens per window (every tiny model here has at least 64 positions)
WORDS = (  # words of the tiny tokenizer's training text, so they tokenize compactly
    *("the", "cat", "sat", "on", "mat", "and", "dog", "log", "when", "Mary", "John", "went", "to", "store"),
    *("gave", "a", "drink", "in", "beginning", "model", "was", "random", "then", "it", "learned", "copy"),
    *("tokens", "had", "seen", "before", "attention", "heads", "move", "information", "between"),
    *("positions", "mlps", "act", "each", "position", "alone", "hello", "world", "numbers", "like"),
    *("symbols", "appear", "too"),
)
PUNCTUATION = (".", ",", "!", "?", ";")


def sentences(n_rows: int, seed: int) -> list[str]:
    """``n_rows`` texts of 3 to 30 words (seeded), some with punctuation."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_rows):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 30))]
        text = " ".join(words)
        rows.append(text + rng.choice(PUNCTUATION))
    return rows


def text_dataset(n_rows: int, seed: int) -> Dataset:
    """A ``text`` column of made-up sentences."""
    return Dataset.from_dict({"text": sentences(n_rows, seed)})


def token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's ids from the HF tokenizer itself, no special tokens added."""
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    unknown = tokenizer.unk_token_id
    assert all(unknown not in row for row in ids), "the corpus must tokenize without <unk>"
    return ids


def text_windows(tokenizer, texts: list[str], context: int = CONTEXT) -> torch.Tensor:
    """The windows ``[n, context]`` SAELens cuts from a text corpus with ``prepend_bos=True`` and the
    default separator (BOS), worked out here by hand: the texts' ids joined with one BOS between
    consecutive texts, read ``context - 1`` tokens at a time, each window led by BOS; a separator
    that would open a window is dropped (the window's own BOS stands for it); the last, partial
    window is dropped."""
    bos = tokenizer.bos_token_id
    stream: list[int | None] = []  # None marks a separator between two texts
    for i, ids in enumerate(token_ids(tokenizer, texts)):
        if i:
            stream.append(None)
        stream.extend(ids)
    windows, position = [], 0
    while True:
        if position < len(stream) and stream[position] is None:
            position += 1
        chunk = stream[position : position + context - 1]
        if len(chunk) < context - 1:
            break
        windows.append([bos] + [bos if t is None else t for t in chunk])
        position += context - 1
    return torch.tensor(windows)


def pretokenized_rows(tokenizer, n_rows: int, seed: int, context: int = CONTEXT) -> torch.Tensor:
    """``[n_rows, context]`` token ids: ``[BOS] + context - 1`` consecutive tokens of seeded text."""
    stream = [t for ids in token_ids(tokenizer, sentences(4 * n_rows, seed)) for t in ids]
    chunk = context - 1
    assert len(stream) >= n_rows * chunk, "not enough text for the rows asked for"
    rows = [[tokenizer.bos_token_id, *stream[i * chunk : (i + 1) * chunk]] for i in range(n_rows)]
    return torch.tensor(rows)


def pretokenized_dataset(tokenizer, n_rows: int, seed: int) -> Dataset:
    """A ``tokens`` column of rows from ``pretokenized_rows``."""
    return Dataset.from_dict({"tokens": pretokenized_rows(tokenizer, n_rows, seed).tolist()})
