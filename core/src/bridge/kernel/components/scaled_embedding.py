"""``hook_embed`` for a model that scales its token embedding outside the embedding module (Granite's
``embedding_multiplier``): fired on the first layer's input, which is that scaled embedding."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from bridge.kernel.components.base import Attachment, Component, ModuleHook
from bridge.kernel.config import BridgeConfig
from bridge.kernel.hook_points import HookPoint


class _LayerInputTap(Attachment):
    """Fire ``hook`` on ``layer``'s hidden-state input while ``scope`` runs on tokens (not on ``inputs_embeds``)."""

    def __init__(self, layer: nn.Module, scope: nn.Module, hook: HookPoint) -> None:
        super().__init__(layer, (hook,))
        self.scope = scope
        self.hook = hook
        self._from_tokens: list[bool] = []
        self._handles: list[RemovableHandle] = []

    def _enter(self, _module: nn.Module, _args: tuple, kwargs: dict[str, Any]) -> None:
        self._from_tokens.append(kwargs.get("inputs_embeds") is None)

    def _leave(self, *_args: Any) -> None:
        self._from_tokens.pop()

    def _on_input(self, _module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple | None:
        if not (self._from_tokens and self._from_tokens[-1]):
            return None
        if args:
            return (self.hook(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": self.hook(kwargs["hidden_states"])}

    def _attach(self) -> None:
        self._from_tokens = []
        self._handles = [
            self.scope.register_forward_pre_hook(ModuleHook(self._enter), with_kwargs=True),
            self.scope.register_forward_hook(ModuleHook(self._leave), always_call=True),
            self.module.register_forward_pre_hook(ModuleHook(self._on_input), with_kwargs=True),
        ]

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class ScaledEmbedding(Component):
    """``hook_embed`` ``[b, p, d_model]`` for a model that scales the token embedding outside its embedding module
    (Granite: ``embed_tokens(ids) * embedding_multiplier`` in the base model's forward). It fires on the first
    decoder layer's input, which is exactly that scaled embedding, so ``hook_embed`` is what enters the residual
    stream (as for Gemma, which scales inside the module). Not fired when the model is given ``inputs_embeds``.

    Built on the base model (path ``""``); ``embed``/``first_layer`` are paths inside it.
    """

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig, hook: HookPoint, embed: str, first_layer: str) -> None:
        super().__init__(hf_module.get_submodule(embed))
        object.__setattr__(self, "hook", hook)
        self.attach(_LayerInputTap(hf_module.get_submodule(first_layer), hf_module, hook))
