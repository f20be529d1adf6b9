"""Whisper (``WhisperForConditionalGeneration``): a speech-to-text encoder-decoder, bridged as two towers. The
encoder (``encoder.``) reads log-mel features ``input_features`` ``[b, mels, 2·frames]`` through two convolutions
and sinusoidal positions, then pre-norm blocks; the decoder (``decoder.``) reads tokens and the encoder through
``cross_attn``."""

from __future__ import annotations

import torch
from torch import nn

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, Component, CrossAttention, ForwardOverride, InputTap, Norm, SplitQKV
from bridge.kernel import BridgeConfig, Composite, HookPoint, Tower, config_from_hf
from bridge_encoders.blocks import WhisperBlock, WhisperDecoderBlock
from bridge_encoders.components import ModuleOutput


class EncoderPositions(Component):
    """Fires ``hook`` (``encoder.hook_pos_embed``) on the encoder's position table (``embed_positions`` of the HF
    encoder ``hf_module``) as added to the frames, ``[b, frames, d_model]``: HF embeds every position once,
    ``[frames, d_model]``, which the hook sees expanded to the batch (read from ``conv1``'s input)."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        self._batch = 1
        self.attach(InputTap(hf_module.conv1, self._record_batch, (hook,)))
        self.attach(ForwardOverride(hf_module.embed_positions, self._batched, (hook,)))

    def _record_batch(self, features: torch.Tensor) -> torch.Tensor:
        self._batch = features.shape[0]  # [b, mels, 2·frames]
        return features

    def _batched(self, original, positions, *args, **kwargs):
        table = original(positions, *args, **kwargs)  # [frames, d_model]
        return self.hook(table.expand(self._batch, *table.shape))  # [b, frames, d_model]


def _attention(kind: type[Attention], path: str) -> Spec:
    return Spec(kind, path, {"qkv": SplitQKV(), "out": "out_proj"})


INLINE_MLP = Spec(MLP, "", {"pre": "fc1", "out": "fc2"})


class WhisperAdapter(Adapter):
    """Whisper. The encoder's hooks: ``encoder.hook_conv_0``/``hook_conv_1`` (each convolution's output before its
    GELU), ``encoder.hook_pos_embed``, pre-norm ``encoder.blocks.{i}.…``, ``encoder.ln_final``; the decoder's:
    ``decoder.hook_embed``, ``decoder.hook_pos_embed``, ``decoder.blocks.{i}.…`` with ``cross_attn.…``,
    ``decoder.ln_final``; ``unembed`` is ``proj_out``. Input: the features (or the feature extractor's output), the
    decoder's tokens as ``decoder_input=``; the loss is against ``labels=``."""

    architectures = ("WhisperForConditionalGeneration",)
    model_types = ("whisper",)
    modalities = ("audio", "text")
    audio_input = "input_features"
    loss_kind = "labels"
    position_ids = "model"

    def stack_config(self, stack: str) -> BridgeConfig:
        c = self.hf_config
        heads = getattr(c, f"{stack}_attention_heads")
        return config_from_hf(
            c,
            n_layers=getattr(c, f"{stack}_layers"),
            n_heads=heads,
            n_key_value_heads=heads,
            d_head=c.d_model // heads,
            d_mlp=getattr(c, f"{stack}_ffn_dim"),
            n_ctx=c.max_source_positions if stack == "encoder" else c.max_target_positions,
            act_fn=c.activation_function,
            normalization_type="LN",
            positional_embedding_type="sinusoidal" if stack == "encoder" else "standard",
        )

    def bridge_config(self) -> BridgeConfig:
        cfg = self.stack_config("encoder")
        cfg.default_prepend_bos = False
        cfg.extra["towers"] = ("encoder", "decoder")
        cfg.extra["decoder_n_layers"] = self.hf_config.decoder_layers
        return cfg

    def encoder_map(self) -> ComponentMap:
        return ComponentMap(
            root="model.encoder",
            hooks={
                "hook_conv_0": Spec(ModuleOutput, "conv1"),
                "hook_conv_1": Spec(ModuleOutput, "conv2"),
                "hook_pos_embed": Spec(EncoderPositions),
            },
            blocks="layers",
            block=BlockSpec(
                WhisperBlock,
                {
                    "ln1": Spec(Norm, "self_attn_layer_norm"),
                    "attn": _attention(Attention, "self_attn"),
                    "ln2": Spec(Norm, "final_layer_norm"),
                    "mlp": INLINE_MLP,
                },
            ),
            ln_final=Spec(Norm, "layer_norm"),
        )

    def decoder_map(self) -> ComponentMap:
        return ComponentMap(
            root="model.decoder",
            embed="embed_tokens",
            hooks={"hook_pos_embed": Spec(ModuleOutput, "embed_positions")},
            blocks="layers",
            block=BlockSpec(
                WhisperDecoderBlock,
                {
                    "ln1": Spec(Norm, "self_attn_layer_norm"),
                    "attn": _attention(Attention, "self_attn"),
                    "ln2": Spec(Norm, "encoder_attn_layer_norm"),
                    "cross_attn": _attention(CrossAttention, "encoder_attn"),
                    "ln3": Spec(Norm, "final_layer_norm"),
                    "mlp": INLINE_MLP,
                },
            ),
            ln_final=Spec(Norm, "layer_norm"),
            head_unembed="proj_out",
        )

    def component_map(self, cfg: BridgeConfig) -> Composite:
        return Composite(
            towers={
                "encoder": Tower(self.encoder_map(), cfg),
                "decoder": Tower(self.decoder_map(), self.stack_config("decoder")),
            },
            head="decoder",
        )


__all__ = ["EncoderPositions", "WhisperAdapter"]
