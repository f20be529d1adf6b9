"""Tiny HF models for the lifecycle checks, and what they output bare (the HF model alone) and bridged.

Shared by the lifecycle checks (``bridge.testing.lifecycle``), the hook-lifecycle state machine
(``bridge.testing.machine``) and the bf16 norm check (``bridge.testing.numerics``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bridge.kernel import seam
from bridge.model import Bridge
from bridge.testing.examples import AdapterLike, adapter_of, examples_of
from bridge.testing.fixtures import TINY_VOCAB, build_tiny_model, sensitize

POS = 6


def tiny_hf_model(adapter: AdapterLike, architecture: str | None = None, seed: int = 0) -> nn.Module:
    """A seeded tiny HF model of the adapter's ``example_config`` (``sensitize``d), in eval mode."""
    model = build_tiny_model(examples_of(adapter).tiny_config(architecture), seed)
    sensitize(model, seed)
    return model.eval()


def is_plain(hf_model: nn.Module) -> bool:
    """Nothing of a bridge is left on ``hf_model``: every forward is the module's own, every torch
    hook does nothing (what a copied bridge hook becomes), attention is an ordinary implementation."""
    probe = torch.zeros(1)
    for module in hf_model.modules():
        forward = module.__dict__.get("forward")
        if forward is not None and not (
            getattr(forward, "__self__", None) is module and forward.__func__ is type(module).forward
        ):
            return False
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        if any(hook(module, (probe,), probe) is not None for hook in hooks):
            return False
    return not any(isinstance(c._attn_implementation, seam.Routed) for c in seam._configs(hf_model))


def bare_output(hf_model: nn.Module, tokens: Any, adapter: AdapterLike | None = None) -> torch.Tensor:
    """What ``Bridge.forward`` returns with no hooks, computed by the HF model alone (``tokens``: token ids, or
    a dict of HF inputs for a model that does not read tokens alone, whose ``adapter`` names the output)."""
    with torch.no_grad():
        fields = adapter_of(adapter).output_fields if adapter is not None else None
        if isinstance(tokens, Mapping) and fields is not None:
            return getattr(hf_model(**tokens), fields[return_type_of(adapter_of(adapter), None)])
        if isinstance(tokens, Mapping):  # a language model's HF inputs (an encoder-decoder's two inputs)
            out = hf_model(**tokens, use_cache=False)
        else:
            out = hf_model(input_ids=tokens, use_cache=False)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def return_type_of(adapter: Any, unembed: nn.Module | None) -> str:
    fields = adapter.output_fields
    if fields is None:
        return "logits" if unembed is not None else "hidden"
    return "logits" if "logits" in fields else "hidden"


def tiny_tokens(seed: int = 0, batch: int = 2, adapter: AdapterLike | None = None, hf_config: Any = None) -> Any:
    """Random tokens ``[batch, POS]``, or the adapter's example input (a dict of HF inputs) where it has one."""
    example = examples_of(adapter).example_input(hf_config, batch, seed) if adapter is not None else None
    if example is not None:
        return dict(example.inputs)
    return torch.randint(1, TINY_VOCAB, (batch, POS), generator=torch.Generator().manual_seed(seed))


def bridge_output(model: Bridge, tokens: Any, **kwargs: Any) -> torch.Tensor:
    return model(tokens, return_type=return_type_of(model.adapter, model.unembed), **kwargs)


__all__ = ["POS", "bare_output", "bridge_output", "is_plain", "return_type_of", "tiny_hf_model", "tiny_tokens"]
