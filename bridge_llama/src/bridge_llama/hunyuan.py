"""HunYuan (Tencent Hunyuan-0.5B…7B dense, Hunyuan-A13B MoE): the Llama layout with q/k RMS norms applied *after*
RoPE, and, in the MoE model, a softmax router with renormalized top-k weights beside one always-on shared MLP.

Because the norms come after the rotation, the order of the attention hooks differs from Qwen3's: ``hook_q``/``hook_k``
(the projections) → RoPE → ``hook_rot_q``/``hook_rot_k`` (the rotated q/k, the norms' inputs) → the norms →
``hook_q_normed``/``hook_k_normed`` (the norms' outputs: what the scores read and the KV cache holds).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bridge.components import Attention, InputTap, OutputTap, QKVSource, Routing, fire_as_bphd, softmax_then_topk
from bridge.kernel import BridgeConfig, HookPoint
from bridge_llama.adapters import LLAMA_ATTN, RopeAdapter
from bridge_llama.moe_adapters import RopeMoEAdapter


class PostRotaryQKNormAttention(Attention):
    """Attention with per-head q/k norms between RoPE and the attention core (HunYuan).

    Hooks: ``hook_q`` ``[b, p, n_heads, d_head]``/``hook_k``/``hook_v`` ``[b, p, n_kv_heads, d_head]`` at the
    projections; ``hook_rot_q``/``hook_rot_k`` (same shapes) after RoPE, on the norms' inputs; ``hook_q_normed``/
    ``hook_k_normed`` (same shapes) on the norms' outputs, what the scores use. Scores, pattern, ``hook_z`` and
    ``hook_result`` as in core's ``Attention``. The rotary hooks sit on the norm modules, not at the seam, so
    they cost nothing at the seam (only scores, pattern and ``hook_z`` switch it on).
    """

    internal_hooks: tuple[str, ...] = ("hook_attn_scores", "hook_pattern", "hook_z")
    #: rotary rotates ``hook_q``/``hook_k``; the norms read its output (the conformance kit's rotary checks)
    qk_norms_after_rotary = True

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        qkv: QKVSource,
        out: str,
        q_norm: str = "query_layernorm",
        k_norm: str = "key_layernorm",
    ) -> None:
        super().__init__(hf_module, cfg, qkv, out, rotary=False)  # RoPE is not seen at the seam here
        self.hook_rot_q = HookPoint()
        self.hook_rot_k = HookPoint()
        self.hook_q_normed = HookPoint()
        self.hook_k_normed = HookPoint()
        for path, rotated, normed, n in (
            (q_norm, self.hook_rot_q, self.hook_q_normed, self.n_heads),
            (k_norm, self.hook_rot_k, self.hook_k_normed, self.n_kv_heads),
        ):
            norm = hf_module.get_submodule(path)  # called on [b, heads, p, d_head]
            self.attach(InputTap(norm, fire_as_bphd(rotated, n, "bhpd"), (rotated,)))
            self.attach(OutputTap(norm, fire_as_bphd(normed, n, "bhpd"), (normed,)))


HUNYUAN_ATTN = (PostRotaryQKNormAttention, {"qkv": LLAMA_ATTN["qkv"], "out": "o_proj"})


class HunYuanDenseV1Adapter(RopeAdapter):
    """HunYuan dense (Hunyuan-0.5B/1.8B/4B/7B): Llama with q/k RMS norms after RoPE (``hook_rot_q/k`` before them,
    ``hook_q_normed``/``hook_k_normed`` after) and, in the checkpoints, NTK-alpha RoPE (HF's ``"dynamic"`` type with
    a fixed ``alpha``: static frequencies)."""

    architectures = ("HunYuanDenseV1ForCausalLM",)
    model_types = ("hunyuan_v1_dense",)
    attention = HUNYUAN_ATTN


class HunYuanMoEV1Adapter(RopeMoEAdapter):
    """HunYuan MoE (Hunyuan-A13B): HunYuan's attention; every MLP a softmax router (``gate.wg``, float32 logits),
    top-k (``moe_topk``, per layer when a list) renormalized, plus an always-on shared MLP (``mlp.shared_expert.*``,
    ``mlp.hook_shared_expert_out``) added without a gate."""

    architectures = ("HunYuanMoEV1ForCausalLM",)
    model_types = ("hunyuan_v1_moe",)
    attention = HUNYUAN_ATTN
    n_experts_field = "num_experts"
    expert_size_field = "intermediate_size"

    def routing(self) -> Routing:
        return softmax_then_topk(normalize=True)

    def moe_options(self) -> dict[str, Any]:
        return {**super().moe_options(), "shared_expert": "shared_mlp"}


HUNYUAN_ADAPTERS: tuple[type[RopeAdapter], ...] = (HunYuanDenseV1Adapter, HunYuanMoEV1Adapter)
