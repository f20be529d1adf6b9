"""Checks at the bridge's door: keyword arguments, token tensors, attention masks, return types.

Every check raises a ``BridgeError`` subclass that says what was given and what is accepted,
before anything reaches the HF model (where the same mistakes crash deep inside, or run silently).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from bridge.kernel.config import BridgeConfig
from bridge.kernel.errors import BadInputError, unknown_argument_error

RETURN_TYPES = ("logits", "loss", "both", "hidden", None)

#: HF forward keyword arguments ``Bridge.forward`` passes through (when the HF model takes them).
HF_PASSTHROUGH = frozenset(
    {
        "past_key_values",
        "use_cache",
        "cache_position",
        "cache_params",
        "position_ids",
        "token_type_ids",
        "output_attentions",
        "output_hidden_states",
        "logits_to_keep",
        "interpolate_pos_encoding",
        "decoder_input_ids",
        "decoder_attention_mask",
    }
)
#: Those of ``HF_PASSTHROUGH`` passed only to an HF forward that names them (image towers' resizing of their
#: position table): a forward taking ``**kwargs`` would otherwise ignore them silently.
NAMED_PASSTHROUGH = frozenset({"interpolate_pos_encoding"})


def check_kwargs(where: str, given: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raise ``UnknownArgumentError`` (with close matches) for a keyword ``where`` does not take."""
    known = set(known)
    for name in given:
        if name not in known:
            raise unknown_argument_error(where, name, known)


def check_return_type(return_type: Any) -> None:
    if return_type not in RETURN_TYPES:
        raise BadInputError(f"return_type={return_type!r} is not one of {list(RETURN_TYPES)}.")


def check_text(input: Any) -> list[str]:
    """A string or a non-empty list of strings, as a list."""
    if isinstance(input, str):
        return [input]
    if isinstance(input, list | tuple) and input and all(isinstance(t, str) for t in input):
        return list(input)
    if isinstance(input, list | tuple) and not input:
        raise BadInputError("got an empty list; pass a string, a non-empty list of strings, or tokens [batch, pos].")
    kinds = sorted({type(t).__name__ for t in input}) if isinstance(input, list | tuple) else [type(input).__name__]
    hint = " (for token ids, pass torch.tensor(ids))" if "int" in kinds else ""
    raise BadInputError(
        f"got a {type(input).__name__} of {', '.join(kinds)}; pass a string, a list of strings, "
        f"or an integer tensor of token ids [pos] or [batch, pos]{hint}."
    )


def check_tokens(tokens: torch.Tensor, cfg: BridgeConfig, d_vocab: int) -> torch.Tensor:
    """Token ids as ``[batch, pos]`` ``long``: integer (any width), 1-D or 2-D, non-empty, within the
    vocabulary and context."""
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise BadInputError(
            f"tokens must be an integer tensor of token ids, got dtype {tokens.dtype}; "
            "convert with `.long()` (or pass text)."
        )
    if tokens.ndim not in (1, 2):
        raise BadInputError(
            f"tokens must have shape [pos] or [batch, pos], got a {tokens.ndim}-D tensor "
            f"of shape {tuple(tokens.shape)}."
        )
    if tokens.ndim == 1:
        tokens = tokens.unsqueeze(0)  # [pos] -> [1, pos]
    tokens = tokens.long()  # embeddings take int64 (int32 on some backends only)
    if tokens.numel() == 0:
        raise BadInputError(f"tokens of shape {tuple(tokens.shape)} hold no token; pass at least one per sequence.")
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= d_vocab:
        bad = low if low < 0 else high
        raise BadInputError(f"token id {bad} is out of range: this model's vocabulary has ids 0..{d_vocab - 1}.")
    if n_ctx_is_limit(cfg) and tokens.shape[1] > cfg.n_ctx:
        raise BadInputError(
            f"{tokens.shape[1]} positions, but this model's position table has n_ctx={cfg.n_ctx}; "
            f"truncate to {cfg.n_ctx} tokens (`to_tokens(..., truncate=True)` does)."
        )
    return tokens


def n_ctx_is_limit(cfg: BridgeConfig) -> bool:
    """Whether no sequence may exceed ``n_ctx``: learned positions, or a family's fixed table
    (``extra["n_ctx_is_limit"]``, e.g. MPT's ALiBi bias)."""
    fixed = cfg.positional_embedding_type == "standard" or bool(cfg.extra.get("n_ctx_is_limit"))
    return fixed and cfg.n_ctx is not None


def check_attention_mask(mask: Any, tokens: torch.Tensor, past: int | None = None) -> torch.Tensor:
    """A 0/1 mask ``[batch, past + pos]`` (a 1-D mask goes with one sequence), as ``long``. ``past`` is the
    number of positions already in a KV cache (``None``: no cache), which the mask covers too; with a cache,
    a chunk may be all padding for some sequence (left-padded prompts fed in pieces)."""
    if not isinstance(mask, torch.Tensor):
        raise BadInputError(f"attention_mask must be a tensor [batch, pos], got {type(mask).__name__}.")
    if mask.ndim == 1:
        mask = mask.unsqueeze(0)  # [pos] -> [1, pos]
    expected = (tokens.shape[0], (past or 0) + tokens.shape[1])
    if tuple(mask.shape) != expected:
        if past:
            raise BadInputError(
                f"with {past} cached positions and {tokens.shape[1]} new tokens the attention mask must cover "
                f"{expected[1]} positions (cached + new), got shape {tuple(mask.shape)}; extend the mask used for "
                "the cached prefix with the new tokens' mask."
            )
        raise BadInputError(
            f"attention_mask has shape {tuple(mask.shape)}, but the tokens have shape {tuple(tokens.shape)}; "
            f"give a {list(expected)} mask with 1 on real tokens and 0 on padding."
        )
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise BadInputError("attention_mask must hold 0 (padding) and 1 (real token) only.")
    mask = mask.long()
    if past is None and not bool(mask.any(dim=-1).all()):
        empty = torch.nonzero(~mask.any(dim=-1))[:, 0].tolist()
        raise BadInputError(f"attention_mask masks every token of sequence(s) {empty}; each needs at least one token.")
    return mask


def check_residual(residual: Any, cfg: BridgeConfig) -> torch.Tensor:
    """The residual stream given to ``start_at_layer``: a float tensor ``[batch, pos, d_model]``."""
    if not isinstance(residual, torch.Tensor) or not residual.is_floating_point():
        kind = residual.dtype if isinstance(residual, torch.Tensor) else type(residual).__name__
        raise BadInputError(
            f"with start_at_layer, the input is the residual stream (a float tensor [batch, pos, d_model]), got {kind}."
        )
    if residual.ndim != 3 or residual.shape[-1] != cfg.d_model:
        raise BadInputError(
            f"with start_at_layer, the input must have shape [batch, pos, {cfg.d_model}], got {tuple(residual.shape)}."
        )
    return residual
