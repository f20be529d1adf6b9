"""Per-head input hooks (``hook_q_input``…) on every q/k/v layout of the first-party families: unpatched they give
HF's logits, and a q-input patch on one head moves exactly that head's query (core's tests cover the hooks on its
fixture adapters; this is the sweep over the families' projection layouts)."""

import pytest
import torch

from bridge.testing import make_pair
from bridge_gpt2 import GPT2Adapter, GPTBigCodeAdapter, GPTNeoXAdapter
from bridge_llama import (
    Gemma2Adapter,
    Gemma3Adapter,
    LlamaAdapter,
    MixtralAdapter,
    Phi3Adapter,
    Qwen2Adapter,
    Qwen3Adapter,
)

ATOL = 1e-5


def delta_for(d_model, seed=1):
    return torch.randn(d_model, generator=torch.Generator().manual_seed(seed))


def add_at_head(delta, head):
    def hook(tensor, hook):
        tensor[:, :, head] += delta  # in place: the hook gets a tensor it may edit

    return hook


@pytest.mark.parametrize(
    "adapter",
    [
        GPT2Adapter,
        GPTNeoXAdapter,
        GPTBigCodeAdapter,
        LlamaAdapter,
        Qwen2Adapter,
        Qwen3Adapter,
        Phi3Adapter,
        Gemma2Adapter,
        Gemma3Adapter,
        MixtralAdapter,
    ],
)
def test_per_head_inputs_on_every_qkv_layout(adapter):
    """Unpatched, the per-head path gives HF's logits; a q-input patch on one head moves exactly that head's
    query, to what it is when ``ln1``'s input is shifted for everyone (a plain torch pre-hook)."""
    pair = make_pair(adapter)
    model, tokens = pair.bridge, pair.tokens()
    cfg, head = model.cfg, 1
    delta = delta_for(cfg.d_model, seed=4)
    model.set_use_split_qkv_input(True)
    model.set_use_attn_in(True)
    noop = [(lambda n: n.endswith(("_input", "attn_in")), lambda t, hook: None)]
    torch.testing.assert_close(
        model.run_with_hooks(tokens, fwd_hooks=noop), pair.reference_output(tokens), atol=ATOL, rtol=0
    )
    name = "blocks.0.attn.hook_q"
    _, clean = model.run_with_cache(tokens, names_filter=name)
    with model.hooks(fwd_hooks=[("blocks.0.hook_q_input", add_at_head(delta, head))]):
        _, patched = model.run_with_cache(tokens, names_filter=name)
    ln1 = model.blocks[0].hf_modules["ln1"]
    handle = ln1.register_forward_pre_hook(lambda m, a: a[0] + delta)
    try:
        _, shifted = model.run_with_cache(tokens, names_filter=name)
    finally:
        handle.remove()
    torch.testing.assert_close(patched[name][:, :, head], shifted[name][:, :, head], atol=ATOL, rtol=0)
    others = [h for h in range(cfg.n_heads) if h != head]
    torch.testing.assert_close(patched[name][:, :, others], clean[name][:, :, others], atol=ATOL, rtol=0)
    assert (patched[name][:, :, head] - clean[name][:, :, head]).abs().max() > 1e-4
