"""Sizes and special-token ids shared by every family's tiny example configs (tests and benchmarks).

Light on purpose: no torch, no transformers. The conformance kit's tokenizer (``bridge.testing``) has
``TINY_VOCAB`` ids with these special ones, so example configs name the same ids.
"""

from __future__ import annotations

#: The vocabulary size of the kit's tiny tokenizer.
TINY_VOCAB = 128
#: The tiny tokenizer's special tokens, each with an id of its own so that no test can pass with one taken for
#: another: padding ``<pad>`` (0), ``<|bos|>`` (1), ``<|endoftext|>`` (EOS, 2); ``<unk>`` is 3.
TINY_PAD_ID = 0
TINY_BOS_ID = 1
TINY_EOS_ID = 2
#: The special ids as HF config keyword arguments.
TINY_SPECIAL_IDS = {"bos_token_id": TINY_BOS_ID, "eos_token_id": TINY_EOS_ID, "pad_token_id": TINY_PAD_ID}

__all__ = ["TINY_BOS_ID", "TINY_EOS_ID", "TINY_PAD_ID", "TINY_SPECIAL_IDS", "TINY_VOCAB"]
