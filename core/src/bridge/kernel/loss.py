"""Losses with TransformerLens's conventions, refusing inputs they cannot score: next-token cross-entropy for
causal language models (``lm_loss``) and cross-entropy against given labels for the heads that are scored so
(``labelled_loss``: masked language models, sequence-to-sequence decoders, classifiers)."""

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


#: The label of a position (or sequence) that no loss counts, as in HF (``CrossEntropyLoss``'s ``ignore_index``).
IGNORE_INDEX = -100


def labelled_loss(logits: torch.Tensor, labels: torch.Tensor, per_token: bool = False) -> torch.Tensor:
    """Cross-entropy of ``logits`` against ``labels``, counting only labels that are not ``-100``.

    Token heads (masked LM, sequence-to-sequence decoders): ``logits`` ``[b, p, vocab]``, ``labels`` ``[b, p]``
    (a masked LM labels only its masked positions; the others are -100). Sequence classifiers: ``logits``
    ``[b, n_labels]``, ``labels`` ``[b]``. Returns the mean over counted labels, or with ``per_token`` the loss of
    each label (``[b, p]`` or ``[b]``, 0 where the label is -100). Raises ``BadInputError`` when the shapes do not
    match or no label is counted (HF would return NaN).
    """
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point():
        raise BadInputError(
            f"labels must be an integer tensor of class or token ids (-100: not scored), got "
            f"{labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__}."
        )
    labels = labels.to(logits.device).long()
    if labels.shape != logits.shape[:-1]:
        raise BadInputError(
            f"labels of shape {tuple(labels.shape)} do not match logits of shape {tuple(logits.shape)}: give one "
            f"label per {'position' if logits.ndim == 3 else 'sequence'}, shape {list(logits.shape[:-1])}."
        )
    counted = labels != IGNORE_INDEX
    if not per_token and not bool(counted.any()):
        raise BadInputError("every label is -100 (not scored): there is nothing to compute a loss on.")
    log_probs = logits.float().log_softmax(-1)
    nll = -log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * counted
    return nll if per_token else nll.sum() / counted.sum()
