"""``BridgeConfig``: one normalized description of any supported model."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch


@dataclass
class BridgeConfig:
    """Normalized model hyperparameters, named as in TransformerLens.

    ``d_head_v`` is the value (and ``hook_z``) head size where it differs from ``d_head`` (MLA).
    ``extra`` holds family-specific fields (rotary base, sliding window, MoE sizes…).

    ``layer_types`` says what each layer is in a model whose layers differ (hybrids), one kind per layer, named
    for the hooks the layer has: ``"attention"`` (``attn.`` hooks), ``"mamba"``/``"mamba2"`` (``mixer.`` SSM
    hooks), ``"gated_deltanet"``/``"lightning_attention"`` (``linear_attn.``), ``"short_conv"`` (``mixer.``),
    ``"mlp"``/``"moe"`` (a layer with an MLP only), ``"+"`` joining kinds that run side by side in one layer;
    ``None`` when every layer is of one kind.

    The ``use_*`` flags mirror the bridge's opt-in hook points (set them with the bridge's
    ``set_use_*`` methods, which keep them in sync); ``n_params``, ``gated_mlp``, ``attn_only``
    and ``tokenizer_prepends_bos`` are filled in when the bridge is built.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_vocab: int
    n_key_value_heads: int | None = None
    d_head: int | None = None
    d_head_v: int | None = None
    d_mlp: int | None = None
    n_ctx: int | None = None
    act_fn: str | None = None
    normalization_type: str | None = "LN"
    positional_embedding_type: str = "standard"
    rotary_dim: int | None = None
    #: Whether RoPE rotates adjacent pairs ``(x0, x1), (x2, x3)…`` (GPT-J, Cohere, GLM) rather than the two
    #: halves of the rotary dims ``(x_i, x_{i+rotary_dim/2})`` (Llama, NeoX).
    rotary_adjacent_pairs: bool = False
    parallel_attn_mlp: bool = False
    architecture: str = ""
    model_type: str = ""
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    default_prepend_bos: bool = True
    default_padding_side: str = "right"
    tokenizer_prepends_bos: bool | None = None
    model_name: str = ""
    d_vocab_out: int | None = None
    eps: float = 1e-5
    init_range: float = 0.02
    final_rms: bool | None = None
    gated_mlp: bool = False
    attn_only: bool = False
    n_params: int | None = None
    use_attn_result: bool = False
    use_split_qkv_input: bool = False
    use_attn_in: bool = False
    use_hook_mlp_in: bool = False
    layer_types: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_key_value_heads is None:
            self.n_key_value_heads = self.n_heads
        if self.d_head is None and self.n_heads:
            self.d_head = self.d_model // self.n_heads
        if self.d_head_v is None:
            self.d_head_v = self.d_head
        if self.d_vocab_out is None:
            self.d_vocab_out = self.d_vocab
        if self.final_rms is None:
            self.final_rms = self.normalization_type == "RMS"

    @property
    def original_architecture(self) -> str:
        """The HF class name (TransformerLens's name for ``architecture``)."""
        return self.architecture

    def replace(self, **changes: Any) -> BridgeConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["dtype"] = str(self.dtype).removeprefix("torch.")
        return out


def config_from_hf(hf_config: Any, **overrides: Any) -> BridgeConfig:
    """Read the standard HF attribute names (``hidden_size``, ``num_attention_heads``…).

    HF maps each model's own names onto these through ``attribute_map``, so most
    adapters only override what their family names differently.
    """

    def get(*names: str, default: Any = None) -> Any:
        for name in names:
            value = getattr(hf_config, name, None)
            if value is not None:
                return value
        return default

    d_model = get("hidden_size", "d_model")
    n_heads = get("num_attention_heads", "n_head", default=0)
    values: dict[str, Any] = dict(
        n_layers=get("num_hidden_layers", "n_layer"),
        d_model=d_model,
        n_heads=n_heads,
        n_key_value_heads=get("num_key_value_heads", default=n_heads),
        d_head=get("head_dim", default=d_model // n_heads if n_heads else None),
        d_mlp=get("intermediate_size", "n_inner", "ffn_dim"),
        d_vocab=get("vocab_size"),
        n_ctx=get("max_position_embeddings", "n_positions"),
        act_fn=get("hidden_act", "activation_function"),
        eps=float(get("layer_norm_epsilon", "layer_norm_eps", "rms_norm_eps", "norm_epsilon", default=1e-5)),
        init_range=float(get("initializer_range", default=0.02)),
        model_name=str(getattr(hf_config, "_name_or_path", "") or "").rstrip("/").rsplit("/", 1)[-1],
        architecture=(get("architectures", default=[""]) or [""])[0],
        model_type=getattr(hf_config, "model_type", ""),
    )
    dtype = getattr(hf_config, "dtype", None)
    if isinstance(dtype, torch.dtype):
        values["dtype"] = dtype
    values.update(overrides)
    return BridgeConfig(**values)
