"""Speech encoders: HuBERT and Wav2Vec2 (``HubertModel``, ``Wav2Vec2Model``), post-norm layout. They read raw audio
samples ``input_values`` ``[b, samples]``; a convolution stack turns them into frames, the positions the blocks
see."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from bridge import Adapter, BlockSpec, BridgeError, ComponentMap, Spec
from bridge.components import MLP, Attention, Component, Norm, OutputTap, PostNormBlock, SplitQKV
from bridge.kernel import BridgeConfig
from bridge_encoders.components import ModuleOutput

#: A post-norm speech layer: ``mid = pre + attn(pre)``, ``post = ln1(mid) + mlp(ln1(mid))``, output ``ln2(post)``.
SPEECH_BLOCK = BlockSpec(
    PostNormBlock,
    {
        "attn": Spec(Attention, "attention", {"qkv": SplitQKV(), "out": "out_proj"}),
        "ln1": Spec(Norm, "layer_norm"),
        "mlp": Spec(MLP, "feed_forward", {"pre": "intermediate_dense", "out": "output_dense"}),
        "ln2": Spec(Norm, "final_layer_norm"),
    },
    extra_paths={"attn_dropout": "dropout"},
)


class FirstOutput(ModuleOutput):
    """``hook`` on the first element of the HF module's output (Wav2Vec2's feature projection returns
    ``(hidden, normalized features)``)."""

    def __init__(self, hf_module: torch.nn.Module, cfg: BridgeConfig, hook: Any) -> None:
        Component.__init__(self, hf_module)

        def fire(out: Any) -> Any:
            if isinstance(out, tuple):
                return (hook(out[0]), *out[1:])
            return hook(out)

        self.attach(OutputTap(hf_module, fire, (hook,)))


class SpeechEncoderAdapter(Adapter):
    """HuBERT and Wav2Vec2 base layout (post-norm; ``do_stable_layer_norm=False``). Hooks:
    ``feature_extractor.hook_conv_{i}`` ``[b, channels, frames_i]`` (each convolution layer's output, after its
    norm and activation), ``hook_features`` ``[b, frames, d_model]`` (the feature projection's output),
    ``hook_pos_embed`` ``[b, frames, d_model]`` (the positional convolution), ``ln_embed.*`` (the encoder's
    LayerNorm before block 0), the post-norm blocks, as BERT's. ``return_type="hidden"`` is
    ``last_hidden_state``."""

    modalities = ("audio",)
    audio_input = "input_values"
    output_fields: ClassVar[dict[str, Any]] = {"hidden": "last_hidden_state"}
    final_norm_in_hidden_states = False
    position_ids = "model"

    def bridge_config(self) -> BridgeConfig:
        cfg = super().bridge_config()
        cfg.positional_embedding_type = "convolutional"
        cfg.n_ctx = None
        cfg.d_vocab = 0
        cfg.default_prepend_bos = False
        cfg.extra["attention_dir"] = "bidirectional"
        return cfg

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        if getattr(self.hf_config, "do_stable_layer_norm", False):
            raise BridgeError(
                f"{type(self).__name__} bridges the post-norm layout; this checkpoint uses the pre-norm "
                "do_stable_layer_norm layout (the large models), which is not bridged yet."
            )
        convs = {
            f"feature_extractor.hook_conv_{i}": Spec(ModuleOutput, f"feature_extractor.conv_layers.{i}")
            for i in range(len(self.hf_config.conv_dim))
        }
        return ComponentMap(
            blocks="encoder.layers",
            block=SPEECH_BLOCK,
            hooks={
                **convs,
                "hook_features": Spec(FirstOutput, "feature_projection"),
                "hook_pos_embed": Spec(ModuleOutput, "encoder.pos_conv_embed"),
            },
            extra={"ln_embed": Spec(Norm, "encoder.layer_norm")},
        )


class HubertAdapter(SpeechEncoderAdapter):
    __doc__ = SpeechEncoderAdapter.__doc__
    architectures = ("HubertModel",)
    model_types = ("hubert",)


class Wav2Vec2Adapter(SpeechEncoderAdapter):
    __doc__ = SpeechEncoderAdapter.__doc__
    architectures = ("Wav2Vec2Model",)
    model_types = ("wav2vec2",)


def frames(hf_config: Any, samples: int) -> int:
    """How many frames the convolution stack makes of ``samples`` audio samples."""
    for kernel, stride in zip(hf_config.conv_kernel, hf_config.conv_stride, strict=True):
        samples = (samples - kernel) // stride + 1
    return samples


__all__ = ["HubertAdapter", "SpeechEncoderAdapter", "Wav2Vec2Adapter", "frames"]
