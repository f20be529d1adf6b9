"""Next-token cross-entropy with TransformerLens's conventions, refusing inputs it cannot score."""

from __future__ import annotations

import torch

from bridge.kernel.errors import BadInputError


def lm_loss(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    per_token: bool = False,
) -> torch.Tensor:
    """Next-token cross-entropy of ``logits`` ``[b, p, vocab]`` on ``tokens`` ``[b, p]``.

    Returns the mean over predicted tokens, or ``[b, p-1]`` with ``per_token`` (0 where the
    mask leaves a prediction out). With a mask, a prediction counts only where both the
    position and the next one are real tokens. Raises ``BadInputError`` when there is no
    prediction to score (one-token input, or a mask leaving none) instead of returning NaN.
    """
    if tokens.ndim == 1:
        tokens = tokens.unsqueeze(0)  # [p] -> [1, p]
    if logits.shape[:2] != tokens.shape:
        raise BadInputError(
            f"logits of shape {tuple(logits.shape)} do not match tokens of shape {tuple(tokens.shape)} "
            "(expected logits [batch, pos, d_vocab] for tokens [batch, pos])."
        )
    if tokens.shape[1] < 2:
        raise BadInputError(
            f"the loss needs at least 2 tokens per sequence (it predicts each next token), got {tokens.shape[1]}."
        )
    tokens = tokens.to(logits.device)
    log_probs = logits[:, :-1].float().log_softmax(-1)  # [b, p-1, vocab]
    nll = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]  # [b, p-1]
    if attention_mask is None:
        return nll if per_token else nll.mean()
    if attention_mask.ndim == 1:
        attention_mask = attention_mask.unsqueeze(0)  # [p] -> [1, p]
    attention_mask = attention_mask.to(logits.device)
    valid = (attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()).to(nll.dtype)  # [b, p-1]
    if per_token:
        return nll * valid
    if not bool(valid.any()):
        raise BadInputError(
            "the attention mask leaves no next-token prediction to score (it needs two adjacent real tokens)."
        )
    return (nll * valid).sum() / valid.sum()
