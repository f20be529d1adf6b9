"""T5 and mT5 (``T5ForConditionalGeneration``, ``MT5ForConditionalGeneration``): an encoder-decoder, bridged as
two towers, ``encoder.`` and ``decoder.``, whose decoder blocks read the encoder through ``cross_attn``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, CrossAttention, Norm, SplitQKV
from bridge.kernel import BridgeConfig, Composite, HookPoint, Tower, config_from_hf
from bridge_encoders.blocks import T5Block, T5DecoderBlock


class T5Attention(Attention):
    """T5's self-attention: core ``Attention`` plus ``hook_position_bias`` ``[1, n_heads, q, k]``, the relative
    position bias added to this layer's scores (layer 0 computes it from its bucket table and every layer of the
    stack adds the same one; a patch here changes this layer's scores only). T5 does not scale ``q·k``."""

    internal_hooks = (*Attention.internal_hooks, "hook_position_bias")

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, **options: Any) -> None:
        super().__init__(hf_module, cfg, **options)
        self.hook_position_bias = HookPoint()
        self.hook_position_bias.on_change(self._update_seam)

    def run_seam(self, inner: Callable, module: nn.Module, query, key, value, attention_mask, **kwargs):
        if kwargs.get("position_bias") is not None:
            kwargs["position_bias"] = self.hook_position_bias(kwargs["position_bias"])
        return super().run_seam(inner, module, query, key, value, attention_mask, **kwargs)


def _mlp(hf_config: Any, layer: str) -> Spec:
    """``DenseReluDense`` under ``layer`` (``layer.1.`` in the encoder, ``layer.2.`` in the decoder):
    ``wi → act → wo``, or gated (``act(wi_0) * wi_1 → wo``: T5 v1.1, Flan-T5, mT5)."""
    if hf_config.is_gated_act:
        return Spec(MLP, f"{layer}DenseReluDense", {"pre": "wi_0", "pre_linear": "wi_1", "out": "wo"})
    return Spec(MLP, f"{layer}DenseReluDense", {"pre": "wi", "out": "wo"})


def _attention(kind: type[Attention], path: str) -> Spec:
    return Spec(kind, path, {"qkv": SplitQKV("q", "k", "v"), "out": "o"})


class T5Adapter(Adapter):
    """T5 and mT5. Hooks ``encoder.hook_embed``, ``encoder.blocks.{i}.…``, ``encoder.ln_final.…``,
    ``decoder.hook_embed``, ``decoder.blocks.{i}.…`` (with ``cross_attn.…``, ``ln3``, ``hook_cross_attn_out``,
    ``hook_resid_mid_cross``), ``decoder.ln_final.…``; the decoder's ``lm_head`` is ``unembed``. Norms are RMS
    norms; self-attention carries ``attn.hook_position_bias``. The loss is against ``labels=`` (the decoder's
    targets), as HF computes it. ``cfg`` is the encoder's; ``model.encoder.cfg`` and ``model.decoder.cfg`` are
    each stack's."""

    architectures = ("T5ForConditionalGeneration", "MT5ForConditionalGeneration")
    model_types = ("t5", "mt5")
    loss_kind = "labels"

    def stack_config(self, n_layers: int) -> BridgeConfig:
        c = self.hf_config
        return config_from_hf(
            c,
            n_layers=n_layers,
            d_head=c.d_kv,
            d_mlp=c.d_ff,
            n_ctx=None,
            act_fn=c.dense_act_fn,
            eps=c.layer_norm_epsilon,
            normalization_type="RMS",
            positional_embedding_type="relative_positional_bias",
            gated_mlp=c.is_gated_act,
        )

    def bridge_config(self) -> BridgeConfig:
        cfg = self.stack_config(self.hf_config.num_layers)
        cfg.default_prepend_bos = False
        cfg.extra["towers"] = ("encoder", "decoder")
        cfg.extra["decoder_n_layers"] = self.hf_config.num_decoder_layers
        return cfg

    def component_map(self, cfg: BridgeConfig) -> Composite:
        rms = {"kind": "RMS"}
        encoder = ComponentMap(
            root="encoder",
            embed="embed_tokens",
            blocks="block",
            block=BlockSpec(
                T5Block,
                {
                    "ln1": Spec(Norm, "layer.0.layer_norm", rms),
                    "attn": _attention(T5Attention, "layer.0.SelfAttention"),
                    "ln2": Spec(Norm, "layer.1.layer_norm", rms),
                    "mlp": _mlp(self.hf_config, "layer.1."),
                },
                {"attn_dropout": "layer.0.dropout", "mlp_dropout": "layer.1.dropout"},
            ),
            ln_final=Spec(Norm, "final_layer_norm", rms),
        )
        decoder = ComponentMap(
            root="decoder",
            embed="embed_tokens",
            blocks="block",
            block=BlockSpec(
                T5DecoderBlock,
                {
                    "ln1": Spec(Norm, "layer.0.layer_norm", rms),
                    "attn": _attention(T5Attention, "layer.0.SelfAttention"),
                    "ln2": Spec(Norm, "layer.1.layer_norm", rms),
                    "cross_attn": _attention(CrossAttention, "layer.1.EncDecAttention"),
                    "ln3": Spec(Norm, "layer.2.layer_norm", rms),
                    "mlp": _mlp(self.hf_config, "layer.2."),
                },
                {
                    "attn_dropout": "layer.0.dropout",
                    "cross_dropout": "layer.1.dropout",
                    "mlp_dropout": "layer.2.dropout",
                },
            ),
            ln_final=Spec(Norm, "final_layer_norm", rms),
            head_unembed="lm_head",
        )
        decoder_cfg = self.stack_config(self.hf_config.num_decoder_layers)
        return Composite(
            towers={"encoder": Tower(encoder, cfg), "decoder": Tower(decoder, decoder_cfg)}, head="decoder"
        )


__all__ = ["T5Adapter", "T5Attention"]
