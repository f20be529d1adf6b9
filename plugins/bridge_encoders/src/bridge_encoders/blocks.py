"""Block wirings of the encoder family."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from bridge.components import Block, PostNormBlock, SequentialBlock, first_output


class BertBlock(PostNormBlock):
    """BERT's layer (BERT, RoBERTa, XLM-R): post-norm, with each sublayer's residual sum inside an HF output
    module (``attention.output``: dense → dropout → LayerNorm(· + input); ``output`` alike after the MLP).

    The wiring calls the attention core (``attention.self``), the output projection and the MLP's two linears
    itself, so that ``hook_attn_out`` and ``hook_mlp_out`` are the sublayers' outputs before the residual sum
    and the norms are ``ln1`` (``attention.output.LayerNorm``) and ``ln2`` (``output.LayerNorm``).
    """

    inline_children = ("mlp",)

    def run_attention(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        kwargs = {k: v for k, v in call_kwargs.items() if not k.startswith("encoder_")}
        z, weights = self.hf_modules["attn"].self(x, **kwargs)  # [b, p, n_heads * d_head]
        out = self.hf_modules["attn_dropout"](self.hf_modules["attn_out"](z))
        return out, weights

    def run_mlp(self, x: torch.Tensor) -> torch.Tensor:
        hidden = first_output(self.hf_modules["intermediate"](x))  # dense → activation, [b, p, d_mlp]
        return self.hf_modules["mlp_dropout"](self.hf_modules["mlp_out"](hidden))


class T5Block(Block):
    """T5's encoder layer: pre-norm, each sublayer in ``layer[i]`` (norm, sublayer, dropout, residual sum)
    re-expressed as ``mid = pre + attn(ln1(pre))``, ``post = mid + mlp(ln2(mid))``. The HF layer returns
    ``(hidden, self-attention position bias, cross-attention position bias)``: the biases are passed on as HF
    computed them (the next layer reads layer 0's)."""

    block_hooks = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
    algebra = (
        ("hook_resid_mid", ("hook_resid_pre", "hook_attn_out")),
        ("hook_resid_post", ("hook_resid_mid", "hook_mlp_out")),
    )

    def self_attention(self, x: torch.Tensor, kw: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """``(attn_out [b, p, d_model], position bias)``: ``ln1``, the self-attention, its dropout."""
        out, bias, _ = self.hf_modules["attn"](
            self.run_norm("ln1", x),
            mask=kw.pop("attention_mask", None),
            position_bias=kw.pop("position_bias", None),
            past_key_values=kw.get("past_key_values"),
            **{k: v for k, v in kw.items() if k != "past_key_values"},
        )
        return self.hf_modules["attn_dropout"](out), bias

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        kw = {k: v for k, v in call_kwargs.items() if not k.startswith("encoder_")}
        resid_pre = self.hook_resid_pre(hidden)
        attn, bias = self.self_attention(resid_pre, kw)
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(attn))
        mlp_out = self.hook_mlp_out(self.run_mlp(self.run_norm("ln2", resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out), bias, None


class T5DecoderBlock(T5Block):
    """T5's decoder layer: self-attention, cross-attention over the encoder's output, MLP, each pre-norm:
    ``mid = pre + attn(ln1(pre))``, ``mid_cross = mid + cross_attn(ln2(mid))``, ``post = mid_cross +
    mlp(ln3(mid_cross))``. ``hook_cross_attn_out`` and ``hook_resid_mid_cross`` are ``[b, q_dec, d_model]``."""

    block_hooks = (
        "hook_resid_pre",
        "hook_attn_out",
        "hook_resid_mid",
        "hook_cross_attn_out",
        "hook_resid_mid_cross",
        "hook_mlp_out",
        "hook_resid_post",
    )
    algebra = (
        ("hook_resid_mid", ("hook_resid_pre", "hook_attn_out")),
        ("hook_resid_mid_cross", ("hook_resid_mid", "hook_cross_attn_out")),
        ("hook_resid_post", ("hook_resid_mid_cross", "hook_mlp_out")),
    )
    mlp_input_hook = "hook_resid_mid_cross"
    mlp_norm = "ln3"
    has_cross_attention = True
    offers_input_hooks = False

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        kw = {k: v for k, v in call_kwargs.items() if not k.startswith("encoder_")}
        encoder = call_kwargs.get("encoder_hidden_states")
        resid_pre = self.hook_resid_pre(hidden)
        attn, bias = self.self_attention(resid_pre, dict(kw))
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(attn))
        cross_bias = None
        resid_mid_cross = resid_mid
        if encoder is not None:
            kw.pop("attention_mask", None)
            kw.pop("position_bias", None)
            out, cross_bias, _ = self.hf_modules["cross_attn"](
                self.run_norm("ln2", resid_mid),
                mask=call_kwargs.get("encoder_attention_mask"),
                key_value_states=encoder,
                position_bias=call_kwargs.get("encoder_decoder_position_bias"),
                **kw,
            )
            cross_out = self.hook_cross_attn_out(self.hf_modules["cross_dropout"](out))
            resid_mid_cross = self.hook_resid_mid_cross(resid_mid + cross_out)
        mlp_out = self.hook_mlp_out(self.run_mlp(self.run_norm("ln3", resid_mid_cross)))
        return self.hook_resid_post(resid_mid_cross + mlp_out), bias, cross_bias


class InlineSublayers(Block):
    """Sublayers of BART-style layers (BART, Whisper): the MLP's ``fc1``/``fc2`` on the layer itself (computed
    here), functional dropout after each sublayer, the self-attention called without the encoder's arguments."""

    inline_children = ("mlp",)

    def run_attention(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        kwargs = {k: v for k, v in call_kwargs.items() if not k.startswith("encoder_") and k != "use_cache"}
        out, weights = self.hf_modules["attn"](x, **kwargs)
        return self._dropout(out), weights

    def _dropout(self, x: torch.Tensor, p: float | None = None) -> torch.Tensor:
        layer = self.hf_module
        return torch.nn.functional.dropout(x, p=layer.dropout if p is None else p, training=layer.training)

    def run_mlp(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.hf_module
        hidden = self._dropout(layer.activation_fn(layer.fc1(x)), layer.activation_dropout)  # [b, p, d_mlp]
        return self._dropout(layer.fc2(hidden))


class BartBlock(InlineSublayers, PostNormBlock):
    """BART's encoder layer: post-norm, the MLP's ``fc1``/``fc2`` on the layer itself (computed here), dropout
    after each sublayer: ``mid = pre + attn(pre)``, ``post = ln1(mid) + mlp(ln1(mid))``, output ``ln2(post)``."""


class BartDecoderBlock(BartBlock):
    """BART's decoder layer, post-norm: ``mid = pre + attn(pre)``, ``mid_cross = ln1(mid) + cross_attn(ln1(mid))``,
    ``post = ln2(mid_cross) + mlp(ln2(mid_cross))``, output ``ln3(post)`` (``hook_normalized_resid_post``).
    ``hook_cross_attn_out`` and ``hook_resid_mid_cross`` are ``[b, q_dec, d_model]``."""

    block_hooks = (
        "hook_resid_pre",
        "hook_attn_out",
        "hook_resid_mid",
        "hook_cross_attn_out",
        "hook_resid_mid_cross",
        "hook_mlp_out",
        "hook_resid_post",
        "hook_normalized_resid_post",
    )
    mlp_input_hook = "hook_resid_mid_cross"
    mlp_norm = "ln2"
    has_cross_attention = True

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        encoder = call_kwargs.get("encoder_hidden_states")
        resid_pre = self.hook_resid_pre(hidden)
        attn, _ = self.run_attention(resid_pre, call_kwargs)
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(attn))
        normalized = self.run_norm("ln1", resid_mid)
        if encoder is not None:
            kwargs = {k: v for k, v in call_kwargs.items() if not k.startswith("encoder_") and k != "use_cache"}
            kwargs["attention_mask"] = call_kwargs.get("encoder_attention_mask")
            out, _ = self.hf_modules["cross_attn"](normalized, key_value_states=encoder, **kwargs)
            cross_out = self.hook_cross_attn_out(self._dropout(out))
            normalized = self.run_norm("ln2", self.hook_resid_mid_cross(normalized + cross_out))
        mlp_out = self.hook_mlp_out(self.run_mlp(normalized))
        resid_post = self.hook_resid_post(normalized + mlp_out)
        return self.hook_normalized_resid_post(self.run_norm("ln3", resid_post))


class WhisperBlock(InlineSublayers, SequentialBlock):
    """Whisper's encoder layer: pre-norm, ``mid = pre + attn(ln1(pre))``, ``post = mid + mlp(ln2(mid))``, the MLP's
    ``fc1``/``fc2`` on the layer itself."""


class WhisperDecoderBlock(InlineSublayers):
    """Whisper's decoder layer, pre-norm: ``mid = pre + attn(ln1(pre))``, ``mid_cross = mid +
    cross_attn(ln2(mid))``, ``post = mid_cross + mlp(ln3(mid_cross))`` (T5's decoder hooks)."""

    block_hooks = T5DecoderBlock.block_hooks
    algebra = T5DecoderBlock.algebra
    mlp_input_hook = "hook_resid_mid_cross"
    mlp_norm = "ln3"
    has_cross_attention = True
    offers_input_hooks = False

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        encoder = call_kwargs.get("encoder_hidden_states")
        resid_pre = self.hook_resid_pre(hidden)
        attn, _ = self.run_attention(self.run_norm("ln1", resid_pre), call_kwargs)
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(attn))
        resid_mid_cross = resid_mid
        if encoder is not None:
            kwargs = {k: v for k, v in call_kwargs.items() if not k.startswith("encoder_") and k != "use_cache"}
            kwargs["attention_mask"] = call_kwargs.get("encoder_attention_mask")
            out, _ = self.hf_modules["cross_attn"](self.run_norm("ln2", resid_mid), key_value_states=encoder, **kwargs)
            cross_out = self.hook_cross_attn_out(self._dropout(out))
            resid_mid_cross = self.hook_resid_mid_cross(resid_mid + cross_out)
        mlp_out = self.hook_mlp_out(self.run_mlp(self.run_norm("ln3", resid_mid_cross)))
        return self.hook_resid_post(resid_mid_cross + mlp_out)


class T5GemmaBlock(Block):
    """T5Gemma's encoder layer: Gemma 2's sandwich norms, ``attn_out = ln1_post(attn(ln1(pre)))``, ``mid = pre +
    attn_out``, ``mlp_out = ln2_post(mlp(ln2(mid)))``, ``post = mid + mlp_out`` (``dropout`` after each post-norm):
    ``hook_attn_out`` and ``hook_mlp_out`` are what is added to the residual stream."""

    block_hooks = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
    algebra = (
        ("hook_resid_mid", ("hook_resid_pre", "hook_attn_out")),
        ("hook_resid_post", ("hook_resid_mid", "hook_mlp_out")),
    )

    def sublayer(self, norm: str, out: torch.Tensor) -> torch.Tensor:
        """``dropout(norm(out))``: a sublayer's output ``[b, p, d_model]`` as added to the residual stream."""
        return self.hf_modules["dropout"](self.run_norm(norm, out))

    def self_attention(self, resid_pre: torch.Tensor, kw: dict[str, Any], cache: Any) -> torch.Tensor:
        """``ln1_post(attn(ln1(pre)))`` after dropout, ``[b, p, d_model]``; ``cache``: the self-attention's."""
        out, _ = self.hf_modules["attn"](self.run_norm("ln1", resid_pre), past_key_values=cache, **kw)
        return self.sublayer("ln1_post", out)

    def mlp_write(self, resid: torch.Tensor, norm: str, post_norm: str) -> torch.Tensor:
        """``dropout(post_norm(mlp(norm(resid))))`` ``[b, p, d_model]``: what the MLP adds to the stream."""
        return self.sublayer(post_norm, self.hf_modules["mlp"](self.run_norm(norm, resid)))

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        kw = {k: v for k, v in call_kwargs.items() if k != "past_key_values"}
        resid_pre = self.hook_resid_pre(hidden)
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(self.self_attention(resid_pre, kw, None)))
        mlp_out = self.hook_mlp_out(self.mlp_write(resid_mid, "ln2", "ln2_post"))
        return self.hook_resid_post(resid_mid + mlp_out)


class T5GemmaDecoderBlock(T5GemmaBlock):
    """T5Gemma's decoder layer: the encoder layer's sandwich with a cross-attention between self-attention and MLP,
    ``mid_cross = mid + ln2_post(cross_attn(ln2(mid)))``, ``post = mid_cross + ln3_post(mlp(ln3(mid_cross)))``.
    ``hook_cross_attn_out`` and ``hook_resid_mid_cross`` are ``[b, q_dec, d_model]``."""

    block_hooks = T5DecoderBlock.block_hooks
    algebra = T5DecoderBlock.algebra
    mlp_input_hook = "hook_resid_mid_cross"
    mlp_norm = "ln3"
    sublayer_output_modules: ClassVar[dict[str, tuple[str, ...]]] = {
        "attn": ("ln1_post",),
        "cross_attn": ("ln2_post",),
        "mlp": ("ln3_post",),
    }
    has_cross_attention = True
    offers_input_hooks = False  # ln2 is the cross-attention's norm

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        kw = dict(call_kwargs)
        encoder = kw.pop("encoder_hidden_states", None)
        encoder_mask = kw.pop("encoder_attention_mask", None)
        cache = kw.pop("past_key_values", None)
        resid_pre = self.hook_resid_pre(hidden)
        self_cache = cache.self_attention_cache if cache is not None else None
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(self.self_attention(resid_pre, kw, self_cache)))
        cross_kw = {k: v for k, v in kw.items() if k not in ("attention_mask", "position_embeddings", "position_ids")}
        out, _ = self.hf_modules["cross_attn"](
            self.run_norm("ln2", resid_mid),
            attention_mask=encoder_mask,
            encoder_hidden_states=encoder,
            past_key_values=cache,
            **cross_kw,
        )
        cross_out = self.hook_cross_attn_out(self.sublayer("ln2_post", out))
        resid_mid_cross = self.hook_resid_mid_cross(resid_mid + cross_out)
        mlp_out = self.hook_mlp_out(self.mlp_write(resid_mid_cross, "ln3", "ln3_post"))
        return self.hook_resid_post(resid_mid_cross + mlp_out)
