"""MiniMax (MiniMax-Text-01): lightning (linear) attention layers and softmax attention layers, each kind named by
the config's ``layer_types``, every layer with a sparse MoE; the residual stream passes through the norms.

HF's layer is ``n = ln1(x)``, ``mid = α₁ n + β₁ mixer(n)``, ``m = ln2(mid)``, ``post = α₂ m + β₂ mlp(m)``: the
norm's output, scaled, is what the block carries on (MiniMax-Text-01: ``α = 3.5566``, ``β = 1``), so the stream is
not a sum of the layers' writes. Block hooks, all ``[b, p, d_model]``: ``hook_resid_pre``; ``hook_skip_pre``
(``α₁ · ln1(resid_pre)``); ``hook_attn_out`` on softmax-attention layers, ``hook_mixer_out`` on lightning ones
(``β₁ ·`` the token mixer's output); ``hook_resid_mid`` (their sum); ``hook_skip_mid`` (``α₂ · ln2(resid_mid)``);
``hook_mlp_out`` (``β₂ ·`` the MoE's output); ``hook_resid_post`` (their sum).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from bridge import BlockSpec, ComponentMap, LayerKinds, Spec
from bridge.components import Block, Component, MoE, Norm, first_output, softmax_then_topk
from bridge.kernel import BridgeConfig, ComponentMapError
from bridge_llama.adapters import LLAMA_ATTN, RMS, RopeAdapter
from bridge_llama.lightning import LightningAttention


class ScaledSkipBlock(Block):
    """A MiniMax layer whose token mixer is softmax attention (``attn``); see the module's docstring.

    ``residual_scale`` is ``β₂`` (the MLP side's); the token mixer's write is scaled by ``β₁``."""

    #: the token mixer's child name and the hook of its write
    mixer: ClassVar[str] = "attn"
    mixer_write: ClassVar[str] = "hook_attn_out"
    block_hooks = (
        "hook_resid_pre",
        "hook_skip_pre",
        "hook_attn_out",
        "hook_resid_mid",
        "hook_skip_mid",
        "hook_mlp_out",
        "hook_resid_post",
    )
    algebra = (
        ("hook_resid_mid", ("hook_skip_pre", "hook_attn_out")),
        ("hook_resid_post", ("hook_skip_mid", "hook_mlp_out")),
    )
    offers_input_hooks = False  # ln1's output is also the skip: a patch before it would change the stream

    def __init__(
        self, hf_module: nn.Module, cfg: BridgeConfig, children: dict[str, Component], paths: dict[str, str]
    ) -> None:
        super().__init__(hf_module, cfg, children, paths)
        self.mixer_scales = (float(hf_module.attn_alpha_factor), float(hf_module.attn_beta_factor))
        self.mlp_scales = (float(hf_module.mlp_alpha_factor), float(hf_module.mlp_beta_factor))
        self.residual_scale = self.mlp_scales[1]

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        (alpha1, beta1), (alpha2, beta2) = self.mixer_scales, self.mlp_scales
        resid_pre = self.hook_resid_pre(hidden)
        normed = self.run_norm("ln1", resid_pre)
        skip_pre = self.hook_skip_pre(normed * alpha1)
        mixed = self.hf_modules[self.mixer](normed, **call_kwargs)
        write = getattr(self, self.mixer_write)(first_output(mixed) * beta1)
        resid_mid = self.hook_resid_mid(skip_pre + write)
        normed = self.run_norm("ln2", resid_mid)
        skip_mid = self.hook_skip_mid(normed * alpha2)
        mlp_out = self.hook_mlp_out(self.run_mlp(normed) * beta2)
        return self.hook_resid_post(skip_mid + mlp_out)


class ScaledSkipLinearBlock(ScaledSkipBlock):
    """A MiniMax layer whose token mixer is lightning attention (``linear_attn``): as ``ScaledSkipBlock``, its write
    is ``hook_mixer_out``."""

    mixer = "linear_attn"
    mixer_write = "hook_mixer_out"
    forwards_to = "linear_attn"
    block_hooks = (
        "hook_resid_pre",
        "hook_skip_pre",
        "hook_mixer_out",
        "hook_resid_mid",
        "hook_skip_mid",
        "hook_mlp_out",
        "hook_resid_post",
    )
    algebra = (
        ("hook_resid_mid", ("hook_skip_pre", "hook_mixer_out")),
        ("hook_resid_post", ("hook_skip_mid", "hook_mlp_out")),
    )


#: HF's layer kinds (``config.layer_types``) → the bridge's block wiring and token-mixer child
LAYER_KINDS = {
    "full_attention": (ScaledSkipBlock, "attn"),
    "linear_attention": (ScaledSkipLinearBlock, "linear_attn"),
}
#: HF's layer kinds → ``cfg.layer_types`` (the names the hybrids use)
KIND_NAMES = {"full_attention": "attention", "linear_attention": "lightning_attention"}


class MiniMaxAdapter(RopeAdapter):
    """MiniMax-Text-01 (``MiniMaxForCausalLM``): lightning attention (``linear_attn.*``) and GQA softmax attention
    with RoPE (``attn.*``) as ``config.layer_types`` says, a Mixtral-style MoE (softmax, top-k, renormalized) in every
    layer, and the scaled skip connections of ``ScaledSkipBlock``. ``cfg.layer_types`` lists each layer's kind,
    ``"lightning_attention"`` or ``"attention"`` (HF's ``linear_attention``/``full_attention``)."""

    architectures = ("MiniMaxForCausalLM",)
    model_types = ("minimax",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        out = super().config_overrides()
        out["layer_types"] = [KIND_NAMES.get(kind, kind) for kind in c.layer_types]
        out["rotary_dim"] = out["d_head"]  # HF's MiniMax rotary rotates whole heads
        out["gated_mlp"] = True  # the experts are SiLU-gated
        out["extra"] |= {
            "n_experts": c.num_local_experts,
            "experts_per_token": c.num_experts_per_tok,
            "block_size": c.block_size,
            "skip_scales": {
                "full_attention": (c.full_attn_alpha_factor, c.full_attn_beta_factor),
                "linear_attention": (c.linear_attn_alpha_factor, c.linear_attn_beta_factor),
                "mlp": (c.mlp_alpha_factor, c.mlp_beta_factor),
            },
        }
        return out

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        kinds = tuple(self.hf_config.layer_types)
        unknown = sorted(set(kinds) - set(LAYER_KINDS))
        if unknown:
            raise ComponentMapError(
                f"MiniMax: layer_types names {unknown}; bridge knows {sorted(LAYER_KINDS)} (HF's MiniMax builds only "
                "those two)"
            )
        shared = {
            "ln1": Spec(Norm, "input_layernorm", RMS),
            "ln2": Spec(Norm, "post_attention_layernorm", RMS),
            "mlp": Spec(
                MoE, "mlp", {"routing": softmax_then_topk(normalize=True), "router": "gate", "experts": "experts"}
            ),
        }
        mixers = {
            "attn": Spec(self.attention[0], "self_attn", LLAMA_ATTN),
            "linear_attn": Spec(LightningAttention, "self_attn"),
        }
        specs = {
            kind: BlockSpec(wiring, {**shared, child: mixers[child]}) for kind, (wiring, child) in LAYER_KINDS.items()
        }
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=LayerKinds(kinds=kinds, specs={k: specs[k] for k in dict.fromkeys(kinds)}),
            ln_final=Spec(Norm, "norm", RMS),
        )
