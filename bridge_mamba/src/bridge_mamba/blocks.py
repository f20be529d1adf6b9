"""The residual wiring of an SSM block: ``post = pre + mixer(norm(pre))``.

A core ``Block`` whose call arguments go to the ``mixer`` child (``forwards_to``) instead of ``attn``.
"""

from __future__ import annotations

from typing import Any

import torch

from bridge.components import Block


class SSMBlock(Block):
    """Pre-norm SSM block (HF ``MambaBlock``/``Mamba2Block``): ``norm`` then ``mixer``, one residual sum.

    Hooks, all ``[b, p, d_model]``: ``hook_resid_pre`` (block input), ``hook_mixer_in`` (the norm's
    output, weight applied: what the mixer receives), ``hook_resid_post`` (``resid_pre + mixer.hook_ssm_out``,
    the mixer's output, which the mixer fires itself). With ``residual_in_fp32`` the sum
    is taken in float32, as HF does.
    """

    block_hooks = ("hook_resid_pre", "hook_mixer_in", "hook_resid_post")
    forwards_to = "mixer"
    algebra = (("hook_resid_post", ("hook_resid_pre", "mixer.hook_ssm_out")),)

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> torch.Tensor:
        norm, mixer = self.hf_modules["norm"], self.hf_modules["mixer"]
        resid_pre = self.hook_resid_pre(hidden)
        mixer_in = self.hook_mixer_in(norm(resid_pre.to(dtype=norm.weight.dtype)))
        mixer_out = mixer(mixer_in, **call_kwargs)  # the mixer's output tap fires mixer.hook_ssm_out
        residual = resid_pre.to(torch.float32) if getattr(self.hf_module, "residual_in_fp32", False) else resid_pre
        return self.hook_resid_post(residual + mixer_out)
