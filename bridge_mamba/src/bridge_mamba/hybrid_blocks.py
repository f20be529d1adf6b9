"""Block wirings of hybrid models, whose layers mix attention with SSM, convolution or linear-attention layers.

The naming rule: a block's token mixer is ``attn`` when it is attention (core's ``Attention``, every attention
hook), ``mixer`` when it is an SSM or a convolution, ``linear_attn`` for linear attention. The residual hooks are
``hook_resid_pre``/``hook_resid_mid``/``hook_resid_post``, ``hook_attn_out``, ``hook_mlp_out`` where the layer
has them, and ``hook_mixer_out`` (what a non-attention token mixer adds to the stream) in place of
``hook_attn_out``. ``ln1`` is the norm the token mixer reads, ``ln2`` the one the MLP reads.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from bridge.components import Block, SequentialBlock

_RESIDUAL = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")


class HybridLayer(Block):
    """What the hybrid wirings share: calling a non-attention token mixer the way the HF layer does.

    ``mixer_arguments`` maps the mixer's keyword arguments to the HF layer's (``{"cache_params":
    "past_key_values", "attention_mask": "attention_mask"}``); ``passes_kwargs``: whether the HF layer also hands
    the mixer its own ``**kwargs``. ``returns_attention_weights``: whether the HF layer returns
    ``(hidden, attention weights)`` (Bamba, Granite-4); a mixer layer then returns ``(hidden, None)``.
    """

    mixer_arguments: ClassVar[dict[str, str]] = {"cache_params": "past_key_values", "attention_mask": "attention_mask"}
    passes_kwargs: ClassVar[bool] = True

    def mixer_kwargs(self, call_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments the HF layer gives its token mixer, from the layer's own call arguments."""
        out = {mine: call_kwargs.get(theirs) for mine, theirs in self.mixer_arguments.items()}
        if self.passes_kwargs:
            named = set(self._signature.parameters)
            out |= {k: v for k, v in call_kwargs.items() if k not in named and k not in out}
        return out

    def run_mixer(self, name: str, x: torch.Tensor, call_kwargs: dict[str, Any]) -> torch.Tensor:
        """The HF token mixer ``name`` (``mixer`` or ``linear_attn``) on the normalized input ``x`` ``[b, p, d]``."""
        out = self.hf_modules[name](x, **self.mixer_kwargs(call_kwargs))
        return out[0] if isinstance(out, tuple | list) else out

    def run_token_mixer(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """``(output [b, p, d_model], attention weights or None)`` of whichever token mixer the layer has."""
        if "attn" in self.hf_modules:
            return self.run_attention(x, call_kwargs)
        name = "linear_attn" if "linear_attn" in self.hf_modules else "mixer"
        return self.run_mixer(name, x, call_kwargs), None


class MixerMLPBlock(HybridLayer):
    """A pre-norm layer whose token mixer is not attention, then an MLP (Jamba's and Bamba's Mamba layers,
    Qwen3-Next's linear-attention layers): ``mid = pre + mixer(ln1(pre))``, ``post = mid + mlp(ln2(mid))``.

    Hooks, all ``[b, p, d_model]``: ``hook_resid_pre``, ``hook_mixer_out`` (the mixer's output, what it adds),
    ``hook_resid_mid``, ``hook_mlp_out``, ``hook_resid_post``.
    """

    block_hooks = ("hook_resid_pre", "hook_mixer_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
    algebra = (
        ("hook_resid_mid", ("hook_resid_pre", "hook_mixer_out")),
        ("hook_resid_post", ("hook_resid_mid", "hook_mlp_out")),
    )
    forwards_to = "mixer"

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        resid_pre = self.hook_resid_pre(hidden)
        mixed, _ = self.run_token_mixer(self.run_norm("ln1", resid_pre), call_kwargs)
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_mixer_out(mixed))
        mlp_out = self.hook_mlp_out(self.run_mlp(self.run_norm("ln2", resid_mid)))
        return self.block_output(self.hook_resid_post(resid_mid + mlp_out))


class ConvMLPBlock(MixerMLPBlock):
    """``MixerMLPBlock`` of a layer whose HF code hands its mixer the cache as ``past_key_values`` (LFM2)."""

    mixer_arguments: ClassVar[dict[str, str]] = {
        "past_key_values": "past_key_values",
        "attention_mask": "attention_mask",
    }


class LinearAttentionMLPBlock(MixerMLPBlock):
    """``MixerMLPBlock`` whose token mixer is ``linear_attn`` (Gated DeltaNet, lightning attention)."""

    forwards_to = "linear_attn"


class AttentionMLPBlock(HybridLayer, SequentialBlock):
    """A hybrid's attention layer: core's ``SequentialBlock`` (``hook_attn_out``, ``hook_resid_mid``…), returning
    ``(hidden, attention weights)`` where the HF layer does."""


class PairAttentionMLPBlock(AttentionMLPBlock):
    """``AttentionMLPBlock`` of an HF layer returning ``(hidden, attention weights)`` (Bamba)."""

    returns_attention_weights = True


class PairMixerMLPBlock(MixerMLPBlock):
    """``MixerMLPBlock`` of an HF layer returning ``(hidden, None)`` (Bamba's Mamba layers)."""

    returns_attention_weights = True


class ScaledLayerBlock(HybridLayer):
    """A Granite-4 layer: ``mid = pre + m·mixer(ln1(pre))``, ``post = mid + m·(mlp(ln2(mid)) + shared_mlp(ln2(mid)))``
    with ``m`` the HF layer's ``residual_multiplier``; the token mixer is ``attn`` or ``mixer`` (``write``), the
    MLP side a MoE and a dense ``shared_mlp`` summed (or the ``shared_mlp`` alone, as ``mlp``, without experts).

    Hooks ``[b, p, d_model]``: ``hook_resid_pre``, the token mixer's write (``hook_attn_out`` or ``hook_mixer_out``,
    after the multiplier: what is added), ``hook_resid_mid``, ``hook_mlp_out`` (after the multiplier),
    ``hook_resid_post``. The per-head and per-neuron results are before the multiplier (``residual_scale``).
    """

    write: ClassVar[str] = "hook_mixer_out"
    mlp_children = ("mlp", "shared_mlp")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.block_hooks = ("hook_resid_pre", cls.write, "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
        cls.algebra = (
            ("hook_resid_mid", ("hook_resid_pre", cls.write)),
            ("hook_resid_post", ("hook_resid_mid", "hook_mlp_out")),
        )
        cls.forwards_to = "attn" if cls.write == "hook_attn_out" else "mixer"

    def __init__(self, hf_module: Any, cfg: Any, children: dict[str, Any], paths: dict[str, str]) -> None:
        super().__init__(hf_module, cfg, children, paths)
        self.residual_scale = float(hf_module.residual_multiplier)

    def run_mlp(self, x: torch.Tensor) -> torch.Tensor:
        out = super().run_mlp(x)
        return out + self.hf_modules["shared_mlp"](x) if "shared_mlp" in self.hf_modules else out

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        m = self.residual_scale
        resid_pre = self.hook_resid_pre(hidden)
        mixed, _ = self.run_token_mixer(self.run_norm("ln1", resid_pre), call_kwargs)
        resid_mid = self.hook_resid_mid(resid_pre + getattr(self, self.write)(mixed * m))
        mlp_out = self.hook_mlp_out(self.run_mlp(self.run_norm("ln2", resid_mid)) * m)
        return self.block_output(self.hook_resid_post(resid_mid + mlp_out))


class ScaledAttentionBlock(ScaledLayerBlock):
    write = "hook_attn_out"


class ScaledMixerBlock(ScaledLayerBlock):
    write = "hook_mixer_out"


class ParallelMixerBlock(HybridLayer):
    """Attention and a Mamba-2 mixer side by side on one norm, then an MLP (Falcon-H1):
    ``mid = pre + (m_ssm · mixer(ln1(pre)) + m_out · attn(m_in · ln1(pre)))``, ``post = mid + mlp(ln2(mid))``, with
    the HF layer's ``ssm_out_multiplier``, ``attn_out_multiplier`` and ``attention_in_multiplier``.

    Hooks ``[b, p, d_model]``: ``hook_resid_pre``, ``hook_mixer_out`` and ``hook_attn_out`` (each after its output
    multiplier: what is added), ``hook_resid_mid``, ``hook_mlp_out``, ``hook_resid_post``. The mixer reads the
    layer's ``mamba_attention_mask``, the attention its ``attention_mask``. The HF layer returns ``(hidden,)``.
    Per-head results (``z @ W_O``) are before ``attn_out_multiplier``, per-neuron ones (``post @ W_out``) before
    the MLP's ``down_multiplier`` (``result_scales``), so the cache analysis does not split those writes.
    """

    block_hooks = (
        "hook_resid_pre",
        "hook_mixer_out",
        "hook_attn_out",
        "hook_resid_mid",
        "hook_mlp_out",
        "hook_resid_post",
    )
    algebra = (
        ("hook_resid_mid", ("hook_resid_pre", "hook_mixer_out", "hook_attn_out")),
        ("hook_resid_post", ("hook_resid_mid", "hook_mlp_out")),
    )
    mixer_arguments: ClassVar[dict[str, str]] = {
        "cache_params": "past_key_values",
        "attention_mask": "mamba_attention_mask",
    }
    #: ``ln1`` feeds the mixer too, and the attention reads it scaled: no per-head input hooks on it
    offers_input_hooks = False

    def __init__(self, hf_module: Any, cfg: Any, children: dict[str, Any], paths: dict[str, str]) -> None:
        super().__init__(hf_module, cfg, children, paths)
        self.result_scales = {
            "attn": float(hf_module.attn_out_multiplier),
            "mlp": float(hf_module.feed_forward.down_multiplier),
        }

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        layer = self.hf_module
        resid_pre = self.hook_resid_pre(hidden)
        x = self.run_norm("ln1", resid_pre)
        mixer_out = self.hook_mixer_out(self.run_mixer("mixer", x, call_kwargs) * layer.ssm_out_multiplier)
        attn_kwargs = {k: v for k, v in call_kwargs.items() if k != "mamba_attention_mask"}
        attn, _ = self.run_attention(x * layer.attention_in_multiplier, attn_kwargs)
        attn_out = self.hook_attn_out(attn * layer.attn_out_multiplier)
        resid_mid = self.hook_resid_mid(resid_pre + (mixer_out + attn_out))
        mlp_out = self.hook_mlp_out(self.run_mlp(self.run_norm("ln2", resid_mid)))
        return (self.hook_resid_post(resid_mid + mlp_out),)


class SingleSublayerBlock(HybridLayer):
    """A pre-norm layer with one sublayer (Nemotron-H: Mamba-2, attention, MLP or MoE per layer):
    ``post = pre + sublayer(norm(pre))``.

    The sublayer is the block's only child besides its norm: ``attn`` (norm ``ln1``, write ``hook_attn_out``),
    ``mixer`` (``ln1``, ``hook_mixer_out``) or ``mlp`` (``ln2``, ``hook_mlp_out``). Hooks ``[b, p, d_model]``:
    ``hook_resid_pre``, the write, ``hook_resid_post``.
    """

    sublayer: ClassVar[str] = "mixer"
    writes: ClassVar[dict[str, str]] = {"attn": "hook_attn_out", "mixer": "hook_mixer_out", "mlp": "hook_mlp_out"}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        write = cls.writes[cls.sublayer]
        cls.block_hooks = ("hook_resid_pre", write, "hook_resid_post")
        cls.algebra = (("hook_resid_post", ("hook_resid_pre", write)),)
        cls.forwards_to = cls.sublayer

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        resid_pre = self.hook_resid_pre(hidden)
        norm = "ln2" if self.sublayer == "mlp" else "ln1"
        dtype = self.hf_modules[norm].weight.dtype  # HF casts the residual to the norm's dtype first
        x = self.run_norm(norm, resid_pre.to(dtype))
        if self.sublayer == "mlp":
            out = self.run_mlp(x)
        else:
            out, _ = self.run_token_mixer(x, call_kwargs)
        write = getattr(self, self.writes[self.sublayer])(out)
        return self.block_output(self.hook_resid_post(resid_pre + write))


class AttentionOnlyBlock(SingleSublayerBlock):
    sublayer = "attn"


class MixerOnlyBlock(SingleSublayerBlock):
    sublayer = "mixer"


class MLPOnlyBlock(SingleSublayerBlock):
    sublayer = "mlp"
