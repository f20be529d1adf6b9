"""T5Gemma (``T5GemmaForConditionalGeneration``): an encoder-decoder built from Gemma 2 layers, bridged as two towers,
``encoder.`` and ``decoder.``; each stack has its own sizes (``config.encoder``, ``config.decoder``), and the decoder's
blocks read the encoder through ``cross_attn``."""

from __future__ import annotations

from typing import Any

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, CrossAttention, Norm, SplitQKV
from bridge.kernel import BridgeConfig, Composite, Tower, config_from_hf
from bridge_encoders.blocks import T5GemmaBlock, T5GemmaDecoderBlock

GEMMA_RMS = {"kind": "RMS", "weight_offset": 1.0}  # Gemma's RMS norms scale by (1 + w)
GATED_MLP = Spec(MLP, "mlp", {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"})


def _norms(names: dict[str, str]) -> dict[str, Spec]:
    return {name: Spec(Norm, path, GEMMA_RMS) for name, path in names.items()}


class T5GemmaAdapter(Adapter):
    """T5Gemma. Per stack: ``hook_embed`` (the token embedding, before HF scales it by ``√d_model``),
    ``blocks.{i}.…`` with Gemma 2's sandwich norms (``ln1``/``ln1_post`` around the self-attention, then around the
    MLP: ``ln2``/``ln2_post`` in the encoder; in the decoder ``ln2``/``ln2_post`` around ``cross_attn`` and
    ``ln3``/``ln3_post`` around the MLP), rotary self-attention (``hook_rot_q``/``hook_rot_k``), ``ln_final``. The
    decoder's ``lm_head.out_proj`` is ``unembed`` (HF soft-caps the logits after it). The loss is against ``labels=``.
    ``cfg`` is the encoder's; ``model.encoder.cfg`` and ``model.decoder.cfg`` are each stack's (their sizes may
    differ)."""

    architectures = ("T5GemmaForConditionalGeneration",)
    model_types = ("t5gemma",)
    loss_kind = "labels"

    def stack_config(self, stack: str) -> BridgeConfig:
        module = getattr(self.hf_config, stack)
        rope = dict(getattr(module, "rope_parameters", None) or {})
        return config_from_hf(
            module,
            architecture=(self.hf_config.architectures or [""])[0],
            model_type=self.hf_config.model_type,
            act_fn=module.hidden_activation,
            normalization_type="RMS",
            positional_embedding_type="rotary",
            rotary_dim=module.head_dim,
            gated_mlp=True,
            extra={
                "rope_theta": rope.get("rope_theta"),
                "sliding_window": module.sliding_window,
                "layer_types": module.layer_types,
                "embed_scale": module.hidden_size**0.5,
                "query_pre_attn_scalar": module.query_pre_attn_scalar,
                "attn_logit_softcapping": module.attn_logit_softcapping,
                "final_logit_softcapping": module.final_logit_softcapping,
            },
        )

    def bridge_config(self) -> BridgeConfig:
        cfg = self.stack_config("encoder")
        cfg.default_prepend_bos = False
        cfg.extra["towers"] = ("encoder", "decoder")
        cfg.extra["decoder_n_layers"] = self.hf_config.decoder.num_hidden_layers
        return cfg

    def stack_map(self, stack: str) -> ComponentMap:
        children: dict[str, Any] = {
            "attn": Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "o_proj", "rotary": True}),
            "mlp": GATED_MLP,
            **_norms({"ln1": "pre_self_attn_layernorm", "ln1_post": "post_self_attn_layernorm"}),
        }
        if stack == "decoder":
            children["cross_attn"] = Spec(CrossAttention, "cross_attn", {"qkv": SplitQKV(), "out": "o_proj"})
            children |= _norms(
                {
                    "ln2": "pre_cross_attn_layernorm",
                    "ln2_post": "post_cross_attn_layernorm",
                    "ln3": "pre_feedforward_layernorm",
                    "ln3_post": "post_feedforward_layernorm",
                }
            )
        else:
            children |= _norms({"ln2": "pre_feedforward_layernorm", "ln2_post": "post_feedforward_layernorm"})
        return ComponentMap(
            root=f"model.{stack}",
            embed="embed_tokens",
            blocks="layers",
            block=BlockSpec(
                T5GemmaDecoderBlock if stack == "decoder" else T5GemmaBlock, children, {"dropout": "dropout"}
            ),
            ln_final=Spec(Norm, "norm", GEMMA_RMS),
            head_unembed="lm_head.out_proj" if stack == "decoder" else None,
        )

    def component_map(self, cfg: BridgeConfig) -> Composite:
        return Composite(
            towers={
                "encoder": Tower(self.stack_map("encoder"), cfg),
                "decoder": Tower(self.stack_map("decoder"), self.stack_config("decoder")),
            },
            head="decoder",
        )


__all__ = ["T5GemmaAdapter"]
