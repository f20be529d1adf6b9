"""Text ↔ tokens with TransformerLens's conventions (BOS prepended once, padding side)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from bridge.kernel.config import BridgeConfig
from bridge.kernel.errors import BadInputError, BridgeError
from bridge.kernel.validation import check_attention_mask, check_text, check_tokens


class TokenizerHelper:
    """Wraps an HF tokenizer. Tokenizes without the tokenizer's own special tokens and
    prepends BOS itself, so a BOS is never doubled whatever the tokenizer's defaults."""

    def __init__(self, tokenizer: Any, cfg: BridgeConfig) -> None:
        self.tokenizer = tokenizer
        self.cfg = cfg

    def _require(self) -> Any:
        if self.tokenizer is None:
            raise BridgeError(
                "this bridge has no tokenizer: pass token ids, or give one with "
                "bridge.wrap(model, tokenizer) / bridge.load(..., tokenizer=...)"
            )
        return self.tokenizer

    def _pad_id(self) -> int:
        tok = self._require()
        for value in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id):
            if value is not None:
                return value
        return 0

    def encode(
        self,
        input: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        truncate: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``[batch, pos]`` and the attention mask (0 on padding); ``truncate`` keeps the first ``n_ctx``."""
        tok = self._require()
        texts = check_text(input)
        if prepend_bos is None:
            prepend_bos = self.cfg.default_prepend_bos
        bos = [tok.bos_token_id] if prepend_bos and tok.bos_token_id is not None else []
        ids = [bos + tok(text, add_special_tokens=False)["input_ids"] for text in texts]
        if truncate and self.cfg.n_ctx is not None:
            ids = [row[: self.cfg.n_ctx] for row in ids]
        empty = [i for i, row in enumerate(ids) if not row]
        if empty:
            raise BadInputError(
                f"text {empty} gives no token (an empty string without BOS); pass non-empty text or prepend_bos=True."
            )
        width = max(len(row) for row in ids)
        side = padding_side or self.cfg.default_padding_side
        if side not in ("left", "right"):
            raise BadInputError(f"padding_side must be 'left' or 'right', got {side!r}")
        tokens = torch.full((len(ids), width), self._pad_id(), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
            tokens[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
        return tokens, mask

    def prepare(
        self,
        input: str | Sequence[str] | torch.Tensor,
        attention_mask: torch.Tensor | None,
        prepend_bos: bool | None,
        padding_side: Literal["left", "right"] | None,
        d_vocab: int,
        past: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What ``forward`` runs on: checked tokens ``[batch, pos]`` as given (and a checked mask), or
        encoded text (truncated to ``n_ctx``) with its mask when padded. ``past``: the number of positions in
        a KV cache passed along (``None``: none); the mask then covers them too (``[batch, past + pos]``)."""
        if isinstance(input, torch.Tensor):
            tokens = check_tokens(input, self.cfg, d_vocab)
        else:
            tokens, mask = self.encode(input, prepend_bos, padding_side, truncate=True)
            if attention_mask is None and not bool(mask.all()):
                attention_mask = mask
        if attention_mask is not None:
            attention_mask = check_attention_mask(attention_mask, tokens, past)
        return tokens, attention_mask

    def decode(self, tokens: torch.Tensor | Sequence[int]) -> str | list[str]:
        tok = self._require()
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 2:
            return [tok.decode(row) for row in tokens.tolist()]
        return tok.decode(tokens.tolist())

    def str_tokens(
        self,
        input: str | Sequence[str] | torch.Tensor | Sequence[int],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
    ) -> list[str] | list[list[str]]:
        """Each token as a string: a list for one text or sequence, a list of lists for a list of texts
        or a ``[batch > 1, pos]`` tensor (texts are not padded)."""
        tok = self._require()
        if isinstance(input, str):
            ids = self.encode(input, prepend_bos, padding_side, truncate=True)[0][0]
        elif isinstance(input, list | tuple) and input and all(isinstance(t, str) for t in input):
            return [self.str_tokens(text, prepend_bos, padding_side) for text in input]
        else:
            ids = torch.as_tensor(input)
            if ids.ndim == 2 and ids.shape[0] != 1:
                return [self.str_tokens(row) for row in ids]
            if ids.ndim > 2:
                shape = tuple(ids.shape)
                raise BadInputError(f"to_str_tokens takes text or tokens [pos] / [batch, pos], got shape {shape}")
            ids = ids.reshape(-1)  # [1, pos] or [] -> [pos]
        return [tok.decode([i]) for i in ids.tolist()]

    def single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (no BOS)."""
        ids = self.encode(string, prepend_bos=False)[0][0].tolist()
        if len(ids) != 1:
            raise BadInputError(f"{string!r} is {len(ids)} tokens, not one: {self.str_tokens(torch.tensor(ids))}")
        return ids[0]

    def prepends_bos(self) -> bool | None:
        """Whether the tokenizer adds a BOS by itself (as TransformerLens's ``tokenizer_prepends_bos``)."""
        if self.tokenizer is None:
            return None
        return len(self.tokenizer.encode("")) > 0
