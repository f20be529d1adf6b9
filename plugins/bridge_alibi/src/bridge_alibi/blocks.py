"""Block wirings of the ALiBi family, re-expressed around the HF blocks' own submodules.

BLOOM's attention and MLP, and MPT's MLP, add the residual themselves (``forward(x, residual)``):
the wirings pass them a zero residual to get their own output, and add the stream here, so
``hook_attn_out``/``hook_mlp_out`` are the sublayer outputs and patches at ``hook_resid_mid``
reach both the MLP and the residual sum.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from bridge.components import ParallelBlock, SequentialBlock, SharedNormParallelBlock


class BloomBlock(SequentialBlock):
    """``mid = pre + attn(ln1(pre))``, ``post = mid + mlp(ln2(mid))``; HF's attention gets ``alibi``."""

    returns_attention_weights = True

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        attn, mlp = self.hf_modules["attn"], self.hf_modules["mlp"]
        resid_pre = self.hook_resid_pre(hidden)
        zero = torch.zeros_like(resid_pre)
        attn_out, weights = attn(self.run_norm("ln1", resid_pre), zero, **call_kwargs)
        attn_out = self.hook_attn_out(attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(mlp(self.run_norm("ln2", resid_mid), zero))
        return self.block_output(self.hook_resid_post(resid_mid + mlp_out), weights)


class MptBlock(SequentialBlock):
    """MPT: sequential pre-norm; the MLP adds the residual itself."""

    returns_attention_weights = True

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        resid_pre = self.hook_resid_pre(hidden)
        attn_out, weights = self.hf_modules["attn"](
            self.run_norm("ln1", resid_pre),
            position_bias=call_kwargs["position_bias"],
            attention_mask=call_kwargs["attention_mask"],
            past_key_values=call_kwargs.get("layer_past"),
        )
        attn_out = self.hook_attn_out(self.hf_modules["attn_dropout"](attn_out))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_in = self.run_norm("ln2", resid_mid)
        mlp_out = self.hook_mlp_out(self.hf_modules["mlp"](mlp_in, torch.zeros_like(resid_mid)))
        return self.block_output(self.hook_resid_post(resid_mid + mlp_out), weights)


class FalconSequentialBlock(SequentialBlock):
    """Falcon with ``parallel_attn=False`` (Falcon-RW): sequential pre-norm with dropout-adds."""

    returns_attention_weights = True

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        config, training = self.hf_module.config, self.hf_module.training
        resid_pre = self.hook_resid_pre(hidden)
        attn, weights = self.run_attention(self.run_norm("ln1", resid_pre), call_kwargs)
        attn_out = self.hook_attn_out(F.dropout(attn, p=config.attention_dropout, training=training))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.run_mlp(self.run_norm("ln2", resid_mid))
        mlp_out = self.hook_mlp_out(F.dropout(mlp_out, p=config.hidden_dropout, training=training))
        return self.block_output(self.hook_resid_post(resid_mid + mlp_out), weights)


class FalconResidualDropout:
    """Falcon adds ``dropout(mlp_out + attn_out)`` (``hidden_dropout``) to the stream."""

    def combine_sublayers(self, attn_out: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
        hf = self.hf_module
        return F.dropout(mlp_out + attn_out, p=hf.config.hidden_dropout, training=hf.training)


class FalconParallelBlock(FalconResidualDropout, ParallelBlock):
    """Falcon's new decoder architecture with two norms: ``post = pre + drop(mlp(ln2(pre)) + attn(ln1(pre)))``."""

    returns_attention_weights = True


class FalconSharedNormBlock(FalconResidualDropout, SharedNormParallelBlock):
    """Falcon-7B (one shared layer norm): ``n = ln1(pre)``, ``post = pre + drop(mlp(n) + attn(n))``."""

    returns_attention_weights = True
