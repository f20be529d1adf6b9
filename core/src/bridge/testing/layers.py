"""Layer kinds: which blocks of a part attend, which mix tokens some other way, and which block of each kind
comes first. Hybrids (attention and SSM layers interleaved, dense and MoE MLPs) are checked per kind: HF returns
attention patterns for its attention layers only, and a check that looked at block 0 alone would skip a kind."""

from __future__ import annotations

from typing import Any

from torch import nn

from bridge.kernel.components.attention import Attention
from bridge.kernel.components.base import Component


def hf_path(model: Any, module: nn.Module) -> str:
    """The qualified name of ``module`` in the bridge's HF model."""
    return next(name for name, m in model.hf_model.named_modules() if m is module)


def is_attention(module: nn.Module) -> bool:
    """Whether a component attends: core's ``Attention``, or any component with ``hook_pattern`` and ``hook_z``
    (a family's own attention, e.g. ALiBi's)."""
    return isinstance(module, Attention) or (hasattr(module, "hook_pattern") and hasattr(module, "hook_z"))


def attention_of(block: nn.Module) -> Any:
    """The block's attention component (its ``attn`` child, or any child that attends), if it has one."""
    attn = getattr(block, "attn", None)
    if attn is not None and is_attention(attn):
        return attn
    return next((child for child in block.children() if is_attention(child)), None)


def layer_kind(block: nn.Module) -> tuple[str, ...]:
    """A block's kind: its wiring and the component class of each child (``("SequentialBlock", "attn=Attention",
    "mlp=MLP")``), so attention and SSM layers, and dense and MoE MLPs, are different kinds."""
    children = sorted(f"{name}={type(child).__name__}" for name, child in block.named_children())
    return (type(block).__name__, *[c for c in children if not c.endswith("=HookPoint")])


def first_of_each_kind(blocks: Any) -> list[int]:
    """The index of the first block of every kind, in order."""
    seen: dict[tuple[str, ...], int] = {}
    for layer, block in enumerate(blocks):
        seen.setdefault(layer_kind(block), layer)
    return sorted(seen.values())


def attention_layers(blocks: Any) -> list[int]:
    """The indices of the blocks that have an attention component."""
    return [layer for layer, block in enumerate(blocks) if attention_of(block) is not None]


def components(block: nn.Module, kind: type) -> list[tuple[str, Component]]:
    """The block's children (at any depth) that are ``kind`` components, by their name in the block."""
    return [(name, m) for name, m in block.named_modules() if name and isinstance(m, kind)]


__all__ = [
    "attention_layers",
    "attention_of",
    "components",
    "first_of_each_kind",
    "hf_path",
    "is_attention",
    "layer_kind",
]
