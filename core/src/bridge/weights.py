"""Weight views in TransformerLens's shapes, read live from the HF parameters (no copies)."""

from __future__ import annotations

import torch

from bridge.errors import BridgeError


class WeightViews:
    """Mixed into ``Bridge``: ``W_E``, ``W_pos``, ``W_U``, ``b_U`` (more to come per component)."""

    @property
    def W_E(self) -> torch.Tensor:
        """Token embedding ``[d_vocab, d_model]``."""
        embed = getattr(self, "embed", None)
        if embed is None:
            raise BridgeError(f"{type(self.hf_model).__name__} has no token embedding in its component map")
        return embed.hf.weight

    @property
    def W_pos(self) -> torch.Tensor:
        """Learned position embedding ``[n_ctx, d_model]`` (absent for rotary/ALiBi models)."""
        pos = getattr(self, "pos_embed", None)
        if pos is None:
            raise BridgeError(
                f"{type(self.hf_model).__name__} has no learned position embedding "
                f"(positional_embedding_type={self.cfg.positional_embedding_type!r}), so there is no W_pos"
            )
        return pos.hf.weight

    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding ``[d_model, d_vocab]``."""
        if self.unembed is None:
            raise BridgeError(f"{type(self.hf_model).__name__} has no LM head, so there is no W_U")
        return self.unembed.weight.T

    @property
    def b_U(self) -> torch.Tensor:
        """Unembedding bias ``[d_vocab]`` (zeros when the head has none)."""
        bias = getattr(self.unembed, "bias", None) if self.unembed is not None else None
        if bias is not None:
            return bias
        return torch.zeros(self.W_U.shape[-1], dtype=self.W_U.dtype, device=self.W_U.device)
