"""Induction on repeated random sequences, from hooks alone: the tokens, head scores and losses the demo uses."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bridge.kernel.hooked_model import HookedModel


def repeated_tokens(batch: int, length: int, vocab: tuple[int, int], bos: int | None, seed: int = 0) -> torch.Tensor:
    """``[batch, 1 + 2·length]``: BOS, then random tokens from ``range(*vocab)``, then the same again."""
    generator = torch.Generator().manual_seed(seed)
    half = torch.randint(vocab[0], vocab[1], (batch, length), generator=generator)
    parts = [half, half]
    if bos is not None:
        parts.insert(0, torch.full((batch, 1), bos, dtype=torch.long))
    return torch.cat(parts, dim=1)


def induction_scores(pattern: torch.Tensor, length: int, offset: int = 1) -> torch.Tensor:
    """Mean attention from each second-copy token to the token after its first occurrence.

    ``pattern`` ``[b, h, q, k]`` on ``repeated_tokens`` (``offset`` positions before the first copy,
    1 for BOS); returns ``[h]``. Query ``i`` of the second copy attends key ``i - length + 1``.
    """
    queries = torch.arange(offset + length, offset + 2 * length)
    keys = queries - length + 1
    return pattern[:, :, queries, keys].mean(dim=(0, 2))


def previous_token_scores(pattern: torch.Tensor) -> torch.Tensor:
    """Mean attention from each position to the one before it; ``[b, h, q, k]`` → ``[h]``."""
    queries = torch.arange(1, pattern.shape[-2])
    return pattern[:, :, queries, queries - 1].mean(dim=(0, 2))


@dataclass
class HeadScores:
    """Per-layer, per-head scores ``[n_layers, n_heads]``."""

    induction: torch.Tensor
    previous_token: torch.Tensor

    def top(self, which: str) -> tuple[int, int]:
        scores = getattr(self, which)
        flat = int(scores.argmax())
        return divmod(flat, scores.shape[1])


def head_scores(model: HookedModel, tokens: torch.Tensor, length: int, offset: int = 1) -> HeadScores:
    """Induction and previous-token scores of every head, caching only the attention patterns."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"), return_type=None)
    patterns = [cache["pattern", layer] for layer in range(model.cfg.n_layers)]
    return HeadScores(
        induction=torch.stack([induction_scores(p, length, offset) for p in patterns]),
        previous_token=torch.stack([previous_token_scores(p) for p in patterns]),
    )


def repeated_half_loss(model: HookedModel, tokens: torch.Tensor, length: int, fwd_hooks=()) -> float:
    """Mean next-token loss on the second copy (predicting its tokens 2..length)."""
    per_token = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks, return_type="loss", loss_per_token=True)
    return per_token[:, -(length - 1) :].mean().item()


def zero_head(head: int):
    """A ``hook_z`` hook that zero-ablates one head."""

    def hook(z: torch.Tensor, hook) -> torch.Tensor:
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    return hook
