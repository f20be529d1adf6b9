"""Token and position embeddings: a hook point on the HF embedding module's output.

Some models call their token embedding a second time inside one forward pass (GPT-2 embeds
``token_type_ids`` with ``wte``). ``hook_embed`` is the token embedding only: with a ``scope``
(the HF base model), the hook fires on the first call of the module inside each forward pass of
the scope, and not at all when the scope was given ``inputs_embeds``. A tower of a composite model sharing
its embedding module with another tower (T5's encoder and decoder read one ``shared`` table) sets
``only_in_scope``: calls outside its own stack do not fire its hook.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from bridge.kernel.components.base import Attachment, Component, ModuleHook, OutputTap
from bridge.kernel.components.weight_views import PosEmbeddingWeights, TokenEmbeddingWeights
from bridge.kernel.config import BridgeConfig
from bridge.kernel.hook_points import HookPoint


class FirstCallTap(Attachment):
    """Fire ``hook`` on ``module``'s output at its first call inside each forward pass of ``scope``
    (calls outside the scope fire too, unless ``only_in_scope``)."""

    def __init__(self, module: nn.Module, scope: nn.Module, hook: HookPoint, only_in_scope: bool = False) -> None:
        super().__init__(module, (hook,))
        self.scope = scope
        self.hook = hook
        self.only_in_scope = only_in_scope
        self._inside = 0
        self._fired = False
        self._handles: list[RemovableHandle] = []

    def _enter(self, _module: nn.Module, _args: tuple, kwargs: dict[str, Any]) -> None:
        self._inside += 1
        self._fired = kwargs.get("inputs_embeds") is not None  # then every call embeds something else

    def _leave(self, *_args: Any) -> None:
        self._inside -= 1

    def _on_output(self, _module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        if self._inside:
            if self._fired:
                return None
            self._fired = True
        elif self.only_in_scope:
            return None
        return self.hook(out)

    def _attach(self) -> None:
        self._inside, self._fired = 0, False
        self._handles = [
            self.scope.register_forward_pre_hook(ModuleHook(self._enter), with_kwargs=True),
            self.scope.register_forward_hook(ModuleHook(self._leave), always_call=True),
            self.module.register_forward_hook(ModuleHook(self._on_output)),
        ]

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class Embedding(Component):
    """Fires ``hook`` (owned by the bridge, e.g. ``hook_embed``) on the module's output ``[b, p, d]``.

    With ``scope``, only the module's first call in each forward pass of ``scope`` fires it (and, with
    ``only_in_scope``, no call outside ``scope``)."""

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        hook: HookPoint,
        scope: nn.Module | None = None,
        only_in_scope: bool = False,
    ) -> None:
        super().__init__(hf_module)
        object.__setattr__(self, "hook", hook)
        if scope is None:
            self.attach(OutputTap(hf_module, hook, (hook,)))
        else:
            self.attach(FirstCallTap(hf_module, scope, hook, only_in_scope))


class TokenEmbedding(TokenEmbeddingWeights, Embedding):
    """The model's token embedding (``model.embed``): fires ``hook_embed``; ``W_E`` ``[d_vocab, d_model]``."""

    def __init__(
        self,
        hf_module: nn.Module,
        cfg: BridgeConfig,
        hook: HookPoint,
        scope: nn.Module | None = None,
        only_in_scope: bool = False,
    ) -> None:
        super().__init__(hf_module, cfg, hook=hook, scope=scope, only_in_scope=only_in_scope)
        object.__setattr__(self, "scope", scope)  # a plain attribute: the HF model owns its parameters

    def _layer_label(self) -> str:
        return "embed"


class PosEmbedding(PosEmbeddingWeights, Embedding):
    """The model's position embedding (``model.pos_embed``): fires ``hook_pos_embed``; ``W_pos``
    ``[n_ctx, d_model]``."""

    def _layer_label(self) -> str:
        return "pos_embed"
