"""Block wirings: the residual stream re-expressed around the HF block's own submodules.

While a block-level hook is active, the HF block's forward is replaced by the
wiring below, which calls the same HF submodules in the same order; so a patch at
``hook_resid_mid`` reaches both the MLP and the residual sum, as the name promises.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from bridge.kernel.components.attention import Attention
from bridge.kernel.components.base import Component, ForwardOverride, InputTap
from bridge.kernel.components.head_inputs import HeadInputs
from bridge.kernel.config import BridgeConfig
from bridge.kernel.errors import BridgeError
from bridge.kernel.hook_points import HookPoint


def first_output(output: Any) -> torch.Tensor:
    """The tensor of an HF submodule's output: its first element when it returns a tuple or list."""
    return output[0] if isinstance(output, tuple | list) else output


class Block(Component):
    """Base of the wirings: re-expresses an HF block's forward around its own submodules, firing hooks.

    Public API for writing a wiring (subclass and implement ``wire``):

    - ``block_hooks``: the names of the block's own hook points (created here, all ``[b, p, d_model]``);
      ``algebra``: its residual identities, ``(sum, terms)`` pairs of hook names, exact under patching.
    - ``wire(hidden, call_kwargs)``: the block's forward while a block hook is active; ``hidden`` is the
      block input ``[b, p, d_model]``, ``call_kwargs`` the HF block's other call arguments (those the
      ``forwards_to`` child accepts). Return what the HF block returns.
    - ``hf_modules``: the HF submodules by canonical name (``ln1``, ``attn``, ``ln2``, ``mlp``, dropouts…);
      the bridge components of the same names are the block's children (``block.attn``).
    - ``run_norm``, ``run_attention``, ``run_mlp``: call those HF submodules; ``block_output`` shapes the
      return value (``returns_attention_weights``).
    - ``forward_with_hooks(original, *args, **kwargs)``: what replaces the HF block's ``forward``; it
      splits the call (``split_call``) and calls ``wire``. Override it only to call ``original``.

    Built by ``BlockSpec`` as ``kind(hf_block, cfg, children, paths)``: ``children`` maps canonical names to
    built components, ``paths`` the same names (plus optional ``attn_dropout``/``mlp_dropout``) to HF paths
    relative to the block.
    """

    block_hooks: tuple[str, ...] = ()
    #: The child that receives the HF block's call arguments other than the hidden states
    #: (those it accepts): ``attn``, or ``mixer`` in an SSM block.
    forwards_to: str = "attn"
    #: The residual identities of this wiring: (sum, terms) pairs of hook names, exact under patching.
    algebra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: The hook point holding the block's output, the next block's ``hook_resid_pre`` and HF's hidden state of
    #: this layer: ``hook_resid_post``, or ``hook_normalized_resid_post`` after a post-norm.
    output_hook: str = "hook_resid_post"
    #: Whether the HF block returns ``(hidden, attention_weights)`` (Falcon, BLOOM) rather than the tensor.
    returns_attention_weights: bool = False
    #: Children whose HF module is the block itself (``Spec(MLP, "", ...)``): the sublayer is not a module
    #: of its own (OPT's ``fc1``/``fc2``), so the wiring computes it (override ``run_mlp``/``run_attention``).
    inline_children: tuple[str, ...] = ()
    #: Children whose hooks also switch the wiring on, because the HF block runs them on flattened positions
    #: ``[b·p, d]`` (OPT's MLP and ``final_layer_norm``): under the wiring they see ``[b, p, d]``, whichever
    #: hooks are active. Inline children are always included.
    wire_for_children: tuple[str, ...] = ()
    #: What the block multiplies each sublayer's output by before adding it to the residual stream (Granite's
    #: ``residual_multiplier``): ``hook_attn_out``/``hook_mlp_out`` are after it, so per-head and per-neuron
    #: results do not add up to them. A wiring that scales sets it; the conformance kit reads it.
    residual_scale: float = 1.0
    #: Further factors between a sublayer's per-head or per-neuron results and its write hook, per child
    #: (``{"attn": 0.5}``): Falcon-H1 scales its attention's output after ``o_proj`` and its MLP's after
    #: ``down_proj``. The cache analysis does not split a scaled write into heads or neurons. Set per instance.
    result_scales: dict[str, float]
    #: The HF modules (names in ``hf_modules``) the wiring applies, in order, to each sublayer's output before
    #: adding it to the residual stream: post-norms (Gemma's ``ln1_post``/``ln2_post``) or per-channel layer scales
    #: (DINOv2's; a name may also be a parameter of the HF block the output is multiplied by, InternViT's
    #: ``lambda_1``). ``hook_attn_out``/``hook_mlp_out`` are after them, so per-head and per-neuron results do not
    #: add up to them; the conformance kit and the cache analysis read this.
    sublayer_output_modules: ClassVar[dict[str, tuple[str, ...]]] = {"attn": ("ln1_post",), "mlp": ("ln2_post",)}
    #: The residual hook whose value the MLP side reads, and the norm it goes through first (``None``: none), so
    #: that ``mlp_out = mlp(norm(value))``: ``hook_resid_mid`` and ``ln2`` (pre-norm), ``ln1`` after a post-norm
    #: attention, ``hook_resid_mid_cross`` and ``ln3`` in a decoder block with cross-attention. The conformance kit
    #: patches that hook and runs the reference's norm and MLP on it.
    mlp_input_hook: str = "hook_resid_mid"
    mlp_norm: str | None = "ln2"
    #: The children whose outputs, summed, are the MLP side of the block (before ``residual_scale``): ``("mlp",)``,
    #: or more where the HF layer adds modules reading the same input (Granite-4's MoE and its shared MLP).
    #: The conformance kit runs them all on the reference when it checks ``hook_mlp_out``.
    mlp_children: tuple[str, ...] = ("mlp",)
    #: Whether ``ln1`` feeds the attention and ``ln2`` the MLP (pre-norm), so the opt-in input hooks
    #: (``hook_attn_in``, ``hook_q_input``…, ``hook_mlp_in``) can sit on the norms' inputs.
    offers_input_hooks: bool = True
    #: Whether the block also reads another stack (a decoder block with cross-attention, which HF calls with
    #: ``encoder_hidden_states``); a wiring that sets it passes them on to its ``CrossAttention`` child.
    has_cross_attention: bool = False

    def __init__(
        self, hf_module: nn.Module, cfg: BridgeConfig, children: dict[str, Component], paths: dict[str, str]
    ) -> None:
        super().__init__(hf_module)
        self.result_scales = {}
        for name, child in children.items():
            self.add_module(name, child)
        empty = [name for name, path in paths.items() if not path and name not in self.inline_children]
        if empty:
            raise BridgeError(
                f"{type(self).__name__}: block child {empty[0]!r} has an empty path (the whole HF block); give the "
                f"path of its HF submodule, or list it in {type(self).__name__}.inline_children and compute it "
                "in the wiring."
            )
        self.hf_modules: dict[str, nn.Module] = {
            name: hf_module.get_submodule(path) for name, path in paths.items() if path
        }
        for name in self.block_hooks:
            setattr(self, name, HookPoint())
        signature = inspect.signature(type(hf_module).forward)
        params = list(signature.parameters.values())[1:]
        self._signature = signature.replace(parameters=params)
        self._hidden_name = params[0].name
        forwarded = self.hf_modules.get(self.forwards_to)
        attn_params = inspect.signature(forwarded.forward).parameters.values() if forwarded is not None else ()
        self._attn_takes_any = forwarded is None or any(p.kind is p.VAR_KEYWORD for p in attn_params)
        self._attn_names = {p.name for p in attn_params}
        hooks = tuple(getattr(self, name) for name in self.block_hooks)
        for name in dict.fromkeys(self.inline_children + self.wire_for_children):
            if name in children:
                hooks += tuple(m for m in children[name].modules() if isinstance(m, HookPoint))
        self._wiring = self.attach(ForwardOverride(hf_module, self.forward_with_hooks, hooks))
        if self.offers_input_hooks:
            self._add_input_hooks(children.get("attn"))

    def _add_input_hooks(self, attn: Component | None) -> None:
        """The opt-in ``hook_mlp_in`` ``[b, p, d_model]`` (the input of ``ln2``) where there is an ``ln2``, and
        ``hook_attn_in``, ``hook_q_input`` ``[b, p, n_heads, d_model]``, ``hook_k_input``/``hook_v_input``
        ``[b, p, n_kv_heads, d_model]`` (per-head inputs of ``ln1``, see ``head_inputs``) where the
        attention's projections allow it. A patch there changes the sublayer's input, not the residual stream."""
        if "ln2" in self.hf_modules:
            self.hook_mlp_in = HookPoint(opt_in=True)
            self.attach(InputTap(self.hf_modules["ln2"], self.hook_mlp_in, (self.hook_mlp_in,)))
            if "ln2" in self.wire_for_children + self.inline_children:  # HF runs ln2 on [b·p, d]: wire the block
                self._wiring.hooks += (self.hook_mlp_in,)
                self.hook_mlp_in.on_change(self._wiring.sync)
        layout = attn.qkv.projection_layout(attn) if isinstance(attn, Attention) else None
        if layout is None or "ln1" not in self.hf_modules:
            return
        self.hook_attn_in = HookPoint(opt_in=True)
        self.hook_q_input = HookPoint(opt_in=True)
        self.hook_k_input = HookPoint(opt_in=True)
        self.hook_v_input = HookPoint(opt_in=True)
        hooks = {
            "attn_in": self.hook_attn_in,
            "q_input": self.hook_q_input,
            "k_input": self.hook_k_input,
            "v_input": self.hook_v_input,
        }
        self.head_inputs = HeadInputs(
            self.hf_modules["ln1"], attn.hf_module, layout, attn.n_heads, attn.n_kv_heads, hooks
        )
        for attachment in self.head_inputs.attachments():
            self.attach(attachment)

    def split_call(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, dict[str, Any]]:
        """Split an HF block call into its hidden states ``[b, p, d_model]`` and the keyword arguments
        for the ``forwards_to`` child (only those it accepts, unless it takes ``**kwargs``)."""
        bound = self._signature.bind(*args, **kwargs)
        named = dict(bound.arguments)
        hidden = named.pop(self._hidden_name)
        for param in self._signature.parameters.values():
            if param.kind is param.VAR_KEYWORD:
                named.update(named.pop(param.name, {}))
        if named.get("encoder_hidden_states") is not None and not self.has_cross_attention:
            raise BridgeError(
                f"{type(self).__name__} was called with encoder_hidden_states (a decoder block with cross-attention); "
                "its wiring must set has_cross_attention = True and run the cross-attention."
            )
        if not self._attn_takes_any:
            named = {k: v for k, v in named.items() if k in self._attn_names}
        return hidden, named

    def forward_with_hooks(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The HF block's forward while a block hook is active: ``wire(*split_call(args, kwargs))``."""
        hidden, call_kwargs = self.split_call(args, kwargs)
        return self.wire(hidden, call_kwargs)

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        """The block's computation from its input ``[b, p, d_model]``, firing ``block_hooks``."""
        raise NotImplementedError(f"{type(self).__name__} must implement wire(hidden, call_kwargs)")

    def run_norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """The HF norm ``name`` applied to ``x`` ``[b, p, d_model]``; ``x`` itself where the block has none."""
        return self.hf_modules[name](x) if name in self.hf_modules else x

    def run_attention(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """The HF attention on the normalized input ``x`` ``[b, p, d_model]``, then ``attn_dropout`` if any:
        ``(output [b, p, d_model], attention weights or None)``."""
        result = self.hf_modules["attn"](x, **call_kwargs)
        weights = result[1] if isinstance(result, tuple | list) and len(result) > 1 else None
        out = first_output(result)
        return (self.hf_modules["attn_dropout"](out) if "attn_dropout" in self.hf_modules else out), weights

    def run_mlp(self, x: torch.Tensor) -> torch.Tensor:
        """The HF MLP on the normalized input ``x`` ``[b, p, d_model]``, then ``mlp_dropout`` if any."""
        out = first_output(self.hf_modules["mlp"](x))
        return self.hf_modules["mlp_dropout"](out) if "mlp_dropout" in self.hf_modules else out

    def block_output(self, resid_post: torch.Tensor, attention_weights: Any = None) -> Any:
        """What the HF block returns: ``resid_post``, or ``(resid_post, weights)`` if ``returns_attention_weights``."""
        return (resid_post, attention_weights) if self.returns_attention_weights else resid_post


class SequentialBlock(Block):
    """Pre-norm: ``mid = pre + attn(ln1(pre))``, ``post = mid + mlp(ln2(mid))``."""

    block_hooks = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
    algebra = (
        ("hook_resid_mid", ("hook_resid_pre", "hook_attn_out")),
        ("hook_resid_post", ("hook_resid_mid", "hook_mlp_out")),
    )

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        resid_pre = self.hook_resid_pre(hidden)
        attn, weights = self.run_attention(self.run_norm("ln1", resid_pre), call_kwargs)
        attn_out = self.hook_attn_out(attn)
        resid_mid = self.hook_resid_mid(attn_out + resid_pre)
        mlp_out = self.hook_mlp_out(self.run_mlp(self.run_norm("ln2", resid_mid)))
        return self.block_output(self.hook_resid_post(resid_mid + mlp_out), weights)


class PostNormBlock(Block):
    """Post-norm (OPT-350m, BERT): ``mid = pre + attn(pre)``, ``post = ln1(mid) + mlp(ln1(mid))``,
    and the block's output is ``hook_normalized_resid_post = ln2(post)`` (the next block's ``resid_pre``).

    All hooks ``[b, p, d_model]``; ``hook_resid_mid`` and ``hook_resid_post`` are the sums before the norms.
    """

    block_hooks = (
        "hook_resid_pre",
        "hook_attn_out",
        "hook_resid_mid",
        "hook_mlp_out",
        "hook_resid_post",
        "hook_normalized_resid_post",
    )
    algebra = (("hook_resid_mid", ("hook_resid_pre", "hook_attn_out")),)
    output_hook = "hook_normalized_resid_post"
    offers_input_hooks = False
    mlp_norm = "ln1"

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        resid_pre = self.hook_resid_pre(hidden)
        attn, weights = self.run_attention(resid_pre, call_kwargs)
        attn_out = self.hook_attn_out(attn)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        normalized_mid = self.run_norm("ln1", resid_mid)
        mlp_out = self.hook_mlp_out(self.run_mlp(normalized_mid))
        resid_post = self.hook_resid_post(normalized_mid + mlp_out)
        return self.block_output(self.hook_normalized_resid_post(self.run_norm("ln2", resid_post)), weights)


class ParallelBlock(Block):
    """Parallel attention and MLP: ``post = pre + (mlp(ln2(pre)) + attn(ln1(pre)))`` (no ``resid_mid``)."""

    block_hooks = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post")
    algebra = (("hook_resid_post", ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")),)

    def sublayer_inputs(self, resid_pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention's and the MLP's inputs, both ``[b, p, d_model]``: ``ln1(pre)`` and ``ln2(pre)``."""
        return self.run_norm("ln1", resid_pre), self.run_norm("ln2", resid_pre)

    def combine_sublayers(self, attn_out: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
        """What is added to the stream, ``[b, p, d_model]``: ``mlp_out + attn_out`` (override to add dropout)."""
        return mlp_out + attn_out

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        resid_pre = self.hook_resid_pre(hidden)
        attn_in, mlp_in = self.sublayer_inputs(resid_pre)
        attn, weights = self.run_attention(attn_in, call_kwargs)
        attn_out = self.hook_attn_out(attn)
        mlp_out = self.hook_mlp_out(self.run_mlp(mlp_in))
        return self.block_output(self.hook_resid_post(resid_pre + self.combine_sublayers(attn_out, mlp_out)), weights)


class SharedNormParallelBlock(ParallelBlock):
    """Parallel attention and MLP reading one shared norm (Phi, GPT-J, Falcon-7B):
    ``n = ln1(pre)``, ``post = pre + (mlp(n) + attn(n))``. The norm runs once; there is no ``ln2``."""

    def sublayer_inputs(self, resid_pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.run_norm("ln1", resid_pre)
        return normed, normed
