"""Sizes and special-token ids shared by every family's tiny example configs (tests and benchmarks).

Light on purpose: no torch, no transformers. The conformance kit's tokenizer (``bridge.testing``) has
``TINY_VOCAB`` ids with these special ones, so example configs name the same ids.
"""

from __future__ import annotations

#: The vocabulary size of the kit's tiny tokenizer.
TINY_VOCAB = 128
#: The tiny tokenizer's special tokens: ``<|endoftext|>`` is BOS, EOS and padding.
TINY_BOS_ID = 0
TINY_EOS_ID = 0
TINY_PAD_ID = 0
#: The special ids as HF config keyword arguments.
TINY_SPECIAL_IDS = {"bos_token_id": TINY_BOS_ID, "eos_token_id": TINY_EOS_ID, "pad_token_id": TINY_PAD_ID}

__all__ = ["TINY_BOS_ID", "TINY_EOS_ID", "TINY_PAD_ID", "TINY_SPECIAL_IDS", "TINY_VOCAB"]
