"""Block wirings: the residual stream re-expressed around the HF block's own submodules.

While a block-level hook is active, the HF block's forward is replaced by the
wiring below, which calls the same HF submodules in the same order; so a patch at
``hook_resid_mid`` reaches both the MLP and the residual sum, as the name promises.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from bridge.components.attention import Attention
from bridge.components.base import Component, ForwardOverride, InputTap
from bridge.components.head_inputs import HeadInputs
from bridge.config import BridgeConfig
from bridge.errors import BridgeError
from bridge.hook_points import HookPoint


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) else output


class Block(Component):
    """Base of the wirings: binds the HF block's call arguments and forwards them to attention.

    ``children`` maps canonical names (``ln1``, ``attn``, ``ln2``, ``mlp``) to built components;
    ``paths`` maps the same names, plus optional ``attn_dropout``/``mlp_dropout``, to HF submodules.
    """

    block_hooks: tuple[str, ...] = ()
    #: The child that receives the HF block's call arguments other than the hidden states
    #: (those it accepts): ``attn``, or ``mixer`` in an SSM block.
    forwards_to: str = "attn"
    #: The residual identities of this wiring: (sum, terms) pairs of hook names, exact under patching.
    algebra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __init__(
        self, hf_module: nn.Module, cfg: BridgeConfig, children: dict[str, Component], paths: dict[str, str]
    ) -> None:
        super().__init__(hf_module)
        for name, child in children.items():
            self.add_module(name, child)
        self.sub = {name: hf_module.get_submodule(path) for name, path in paths.items() if path}
        for name in self.block_hooks:
            setattr(self, name, HookPoint())
        signature = inspect.signature(type(hf_module).forward)
        params = list(signature.parameters.values())[1:]
        self._signature = signature.replace(parameters=params)
        self._hidden_name = params[0].name
        forwarded = self.sub.get(self.forwards_to)
        attn_params = inspect.signature(forwarded.forward).parameters.values() if forwarded is not None else ()
        self._attn_takes_any = forwarded is None or any(p.kind is p.VAR_KEYWORD for p in attn_params)
        self._attn_names = {p.name for p in attn_params}
        hooks = tuple(getattr(self, name) for name in self.block_hooks)
        self.attach(ForwardOverride(hf_module, self._hooked_forward, hooks))
        self._add_input_hooks(children.get("attn"))

    def _add_input_hooks(self, attn: Component | None) -> None:
        """The opt-in ``hook_mlp_in`` ``[b, p, d_model]`` (the input of ``ln2``) where there is an ``ln2``, and
        ``hook_attn_in``, ``hook_q_input`` ``[b, p, n_heads, d_model]``, ``hook_k_input``/``hook_v_input``
        ``[b, p, n_kv_heads, d_model]`` (per-head inputs of ``ln1``, see ``head_inputs``) where the
        attention's projections allow it. A patch there changes the sublayer's input, not the residual stream."""
        if "ln2" in self.sub:
            self.hook_mlp_in = HookPoint(opt_in=True)
            self.attach(InputTap(self.sub["ln2"], self.hook_mlp_in, (self.hook_mlp_in,)))
        layout = attn.qkv.projection_layout(attn) if isinstance(attn, Attention) else None
        if layout is None or "ln1" not in self.sub:
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
        self.head_inputs = HeadInputs(self.sub["ln1"], attn.hf, layout, attn.n_heads, attn.n_kv_heads, hooks)
        for attachment in self.head_inputs.attachments():
            self.attach(attachment)

    def _split_arguments(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, dict[str, Any]]:
        bound = self._signature.bind(*args, **kwargs)
        named = dict(bound.arguments)
        hidden = named.pop(self._hidden_name)
        for param in self._signature.parameters.values():
            if param.kind is param.VAR_KEYWORD:
                named.update(named.pop(param.name, {}))
        if named.get("encoder_hidden_states") is not None:
            raise BridgeError("cross-attention blocks are not supported by bridge's block wirings")
        if not self._attn_takes_any:
            named = {k: v for k, v in named.items() if k in self._attn_names}
        return hidden, named

    def _attention(self, x: torch.Tensor, attn_kwargs: dict[str, Any]) -> torch.Tensor:
        out = _first(self.sub["attn"](self.sub["ln1"](x), **attn_kwargs))
        return self.sub["attn_dropout"](out) if "attn_dropout" in self.sub else out

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        out = _first(self.sub["mlp"](self.sub["ln2"](x)))
        return self.sub["mlp_dropout"](out) if "mlp_dropout" in self.sub else out

    def _hooked_forward(self, _original, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError


class SequentialBlock(Block):
    """Pre-norm: ``mid = pre + attn(ln1(pre))``, ``post = mid + mlp(ln2(mid))``."""

    block_hooks = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
    algebra = (
        ("hook_resid_mid", ("hook_resid_pre", "hook_attn_out")),
        ("hook_resid_post", ("hook_resid_mid", "hook_mlp_out")),
    )

    def _hooked_forward(self, _original, *args: Any, **kwargs: Any) -> torch.Tensor:
        hidden, attn_kwargs = self._split_arguments(args, kwargs)
        resid_pre = self.hook_resid_pre(hidden)
        attn_out = self.hook_attn_out(self._attention(resid_pre, attn_kwargs))
        resid_mid = self.hook_resid_mid(attn_out + resid_pre)
        mlp_out = self.hook_mlp_out(self._mlp(resid_mid))
        return self.hook_resid_post(resid_mid + mlp_out)


class ParallelBlock(Block):
    """Parallel attention and MLP: ``post = mlp(ln2(pre)) + attn(ln1(pre)) + pre`` (no ``resid_mid``)."""

    block_hooks = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post")
    algebra = (("hook_resid_post", ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")),)

    def _hooked_forward(self, _original, *args: Any, **kwargs: Any) -> torch.Tensor:
        hidden, attn_kwargs = self._split_arguments(args, kwargs)
        resid_pre = self.hook_resid_pre(hidden)
        attn_out = self.hook_attn_out(self._attention(resid_pre, attn_kwargs))
        mlp_out = self.hook_mlp_out(self._mlp(resid_pre))
        return self.hook_resid_post(mlp_out + attn_out + resid_pre)
