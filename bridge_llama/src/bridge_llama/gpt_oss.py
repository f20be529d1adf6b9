"""GPT-OSS: the Llama layout with attention sinks, alternating sliding/full layers, YaRN RoPE and a biased MoE.

Everything is core's: ``Attention(sinks=True)`` (the sink logit per head joins the softmax on the seam's eager
path, ``attn.hook_sink_logits``), and ``MoE`` with ``topk_then_softmax`` routing (top-k of the biased router logits,
softmax over the selected ones). The experts' clamped SwiGLU runs in HF's own experts module; their weight views
follow its interleaved, transposed ``gate_up_proj`` through the module's ``is_concatenated``/``is_transposed``.
"""

from __future__ import annotations

from typing import Any

from bridge.components import Attention, MoE, topk_then_softmax
from bridge_llama.adapters import LLAMA_ATTN, RopeAdapter, rope_parameters

#: The RoPE scaling of the published checkpoints (gpt-oss-20b and -120b), on a tiny context.
GPT_OSS_YARN = {
    "rope_type": "yarn",
    "rope_theta": 150_000.0,
    "factor": 32.0,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "truncate": False,
    "original_max_position_embeddings": 16,
}


class GptOssAdapter(RopeAdapter):
    """GPT-OSS: attention sinks, sliding/full layers, YaRN RoPE, q/k/v/o biases, MoE with a biased router and
    experts computing ``(clamp(up) + 1) · glu(clamp(gate))`` with biases."""

    architectures = ("GptOssForCausalLM",)
    model_types = ("gpt_oss",)
    attention = (Attention, {**LLAMA_ATTN, "sinks": True})
    mlp = (MoE, {"routing": topk_then_softmax(in_float32=False), "router": "router", "experts": "experts"})

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        out = super().config_overrides()
        out["gated_mlp"] = True
        out["act_fn"] = "swiglu_clamped"  # gate·σ(α·gate) on clamped gate, times (clamped up + 1)
        out["extra"] |= {
            "n_experts": c.num_local_experts,
            "experts_per_token": c.num_experts_per_tok,
            "swiglu_alpha": c.swiglu_alpha,
            "swiglu_limit": c.swiglu_limit,
            "attention_sinks": True,
            "rope_parameters": rope_parameters(c),
        }
        return out
