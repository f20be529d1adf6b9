"""Core pieces the image families use, each on a plain model: ``Adapter.computes_positions`` (the bridge passes no
position ids), ``interpolate_pos_encoding`` passed only to forwards that name it, ``image_token_positions`` refused
by text models, a patched layer norm returning a contiguous tensor as torch's does, and ``sensitize`` redrawing
zero-initialised parameters of three or more dimensions."""

from __future__ import annotations

import pytest
import torch
from public_api_adapters import GPT2Adapter, LlamaAdapter
from torch import nn

import bridge
from bridge.kernel.components import Norm
from bridge.kernel.config import BridgeConfig
from bridge.kernel.errors import UnknownArgumentError
from bridge.testing import build_tiny_model, examples_of, tiny_tokenizer
from bridge.testing.fixtures import sensitize


class PositionsFromHF(LlamaAdapter):
    """Llama, as if HF computed its positions itself."""

    computes_positions = True


def llama(adapter: type = LlamaAdapter) -> bridge.Bridge:
    config = examples_of(LlamaAdapter).example_config()
    return bridge.wrap(build_tiny_model(config), tiny_tokenizer(config.vocab_size), adapter=adapter)


def seen_position_ids(model: bridge.Bridge, tokens: torch.Tensor) -> object:
    seen = {}

    def record(_module, _args, kwargs):
        seen["position_ids"] = kwargs.get("position_ids")

    handle = model.hf_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        model(tokens)
    finally:
        handle.remove()
    return seen["position_ids"]


def test_the_bridge_passes_no_positions_to_a_model_that_computes_them():
    tokens = torch.tensor([[3, 4, 5, 6]])
    assert torch.equal(seen_position_ids(llama(), tokens), torch.arange(4)[None])
    model = llama(PositionsFromHF)
    assert seen_position_ids(model, tokens) is None
    expected = model.hf_model(input_ids=tokens).logits
    torch.testing.assert_close(model(tokens), expected, atol=0, rtol=0)


def test_interpolate_pos_encoding_is_refused_by_a_forward_that_does_not_name_it():
    model = llama()  # LlamaForCausalLM.forward takes **kwargs, which would swallow it silently
    with pytest.raises(UnknownArgumentError, match="interpolate_pos_encoding"):
        model(torch.tensor([[3, 4]]), interpolate_pos_encoding=True)


def test_image_token_positions_is_for_vision_language_models():
    config = examples_of(GPT2Adapter).example_config()
    model = bridge.wrap(build_tiny_model(config), tiny_tokenizer(config.vocab_size))
    with pytest.raises(bridge.BridgeError, match="not a vision-language model"):
        model.image_token_positions(torch.tensor([[3, 4]]))


def test_a_patched_layer_norm_is_contiguous_as_torchs_is():
    """HF code may ``.view`` a norm's output (Idefics3's pixel shuffle); torch's layer norm returns a contiguous
    tensor even for a transposed input, and so must the re-expression once a hook changes the scale."""
    ln = nn.LayerNorm(8)
    norm = Norm(ln, BridgeConfig(n_layers=1, d_model=8, n_heads=1, d_vocab=0))
    x = torch.randn(2, 8, 5).transpose(1, 2)  # [2, 5, 8], not contiguous
    assert ln(x).is_contiguous() and not x.is_contiguous()
    norm.hook_scale.name = "ln.hook_scale"
    handle = norm.hook_scale.add_hook(lambda t, hook: t * 2.0)
    try:
        out = ln(x)
    finally:
        handle.remove()
    assert out.is_contiguous()
    torch.testing.assert_close(
        out, (x - x.mean(-1, keepdim=True)) / (2 * (x.var(-1, False, True) + ln.eps).sqrt()) * ln.weight + ln.bias
    )


def test_sensitize_redraws_zero_parameters_of_three_or_more_dimensions():
    class Registers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Parameter(torch.zeros(1, 4, 16))  # DINOv2's register tokens are initialised so

    module = Registers()
    sensitize(module)
    assert module.tokens.abs().min() > 0
    assert 0.1 < module.tokens.std() < 0.5  # std 1/sqrt(16)
