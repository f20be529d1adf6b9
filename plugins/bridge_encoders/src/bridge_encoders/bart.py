"""BART (``BartForConditionalGeneration``): a post-norm encoder-decoder with learned positions, bridged as two
towers, ``encoder.`` and ``decoder.``, whose decoder blocks read the encoder through ``cross_attn``."""

from __future__ import annotations

from typing import Any

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, CrossAttention, Norm, SplitQKV
from bridge.kernel import BridgeConfig, Composite, Tower, config_from_hf
from bridge_encoders.blocks import BartBlock, BartDecoderBlock
from bridge_encoders.components import BatchedPositions


def _attention(kind: type[Attention], path: str) -> Spec:
    return Spec(kind, path, {"qkv": SplitQKV("q_proj", "k_proj", "v_proj"), "out": "out_proj"})


INLINE_MLP = Spec(MLP, "", {"pre": "fc1", "out": "fc2"})


class BartAdapter(Adapter):
    """BART. Hooks per stack: ``hook_embed`` (scaled token embedding), ``hook_pos_embed``, ``ln_embed.…``
    (``layernorm_embedding``), ``blocks.{i}.…`` (post-norm: ``hook_normalized_resid_post`` is each block's
    output); decoder blocks add ``cross_attn.…``, ``hook_cross_attn_out``, ``hook_resid_mid_cross`` and ``ln3``.
    ``unembed`` is ``lm_head`` (HF adds ``final_logits_bias`` after it). The loss is against ``labels=``."""

    architectures = ("BartForConditionalGeneration",)
    model_types = ("bart",)
    loss_kind = "labels"
    position_ids = "model"
    final_norm_in_hidden_states = False

    def stack_config(self, stack: str) -> BridgeConfig:
        c = self.hf_config
        return config_from_hf(
            c,
            n_layers=getattr(c, f"{stack}_layers"),
            n_heads=getattr(c, f"{stack}_attention_heads"),
            n_key_value_heads=getattr(c, f"{stack}_attention_heads"),
            d_head=c.d_model // getattr(c, f"{stack}_attention_heads"),
            d_mlp=getattr(c, f"{stack}_ffn_dim"),
            act_fn=c.activation_function,
            normalization_type="LN",
            positional_embedding_type="standard",
        )

    def bridge_config(self) -> BridgeConfig:
        cfg = self.stack_config("encoder")
        cfg.default_prepend_bos = False
        cfg.extra["towers"] = ("encoder", "decoder")
        cfg.extra["decoder_n_layers"] = self.hf_config.decoder_layers
        return cfg

    def stack_map(self, stack: str) -> ComponentMap:
        children: dict[str, Any] = {
            "attn": _attention(Attention, "self_attn"),
            "ln1": Spec(Norm, "self_attn_layer_norm"),
        }
        if stack == "decoder":
            children |= {
                "cross_attn": _attention(CrossAttention, "encoder_attn"),
                "ln2": Spec(Norm, "encoder_attn_layer_norm"),
                "ln3": Spec(Norm, "final_layer_norm"),
            }
        else:
            children["ln2"] = Spec(Norm, "final_layer_norm")
        return ComponentMap(
            root=f"model.{stack}",
            embed="embed_tokens",
            hooks={"hook_pos_embed": Spec(BatchedPositions, "embed_positions")},
            blocks="layers",
            block=BlockSpec(BartDecoderBlock if stack == "decoder" else BartBlock, {**children, "mlp": INLINE_MLP}),
            extra={"ln_embed": Spec(Norm, "layernorm_embedding")},
            head_unembed="lm_head" if stack == "decoder" else None,
        )

    def component_map(self, cfg: BridgeConfig) -> Composite:
        return Composite(
            towers={
                "encoder": Tower(self.stack_map("encoder"), cfg),
                "decoder": Tower(self.stack_map("decoder"), self.stack_config("decoder")),
            },
            head="decoder",
        )


__all__ = ["BartAdapter"]
