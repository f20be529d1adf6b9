"""Block wirings of the encoder family."""

from __future__ import annotations

from typing import Any

import torch

from bridge.components import PostNormBlock, first_output


class BertBlock(PostNormBlock):
    """BERT's layer (BERT, RoBERTa, XLM-R): post-norm, with each sublayer's residual sum inside an HF output
    module (``attention.output``: dense → dropout → LayerNorm(· + input); ``output`` alike after the MLP).

    The wiring calls the attention core (``attention.self``), the output projection and the MLP's two linears
    itself, so that ``hook_attn_out`` and ``hook_mlp_out`` are the sublayers' outputs before the residual sum
    and the norms are ``ln1`` (``attention.output.LayerNorm``) and ``ln2`` (``output.LayerNorm``).
    """

    inline_children = ("mlp",)

    def run_attention(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        kwargs = {k: v for k, v in call_kwargs.items() if not k.startswith("encoder_")}
        z, weights = self.hf_modules["attn"].self(x, **kwargs)  # [b, p, n_heads * d_head]
        out = self.hf_modules["attn_dropout"](self.hf_modules["attn_out"](z))
        return out, weights

    def run_mlp(self, x: torch.Tensor) -> torch.Tensor:
        hidden = first_output(self.hf_modules["intermediate"](x))  # dense → activation, [b, p, d_mlp]
        return self.hf_modules["mlp_dropout"](self.hf_modules["mlp_out"](hidden))
