"""The bad-input table of docs/lifecycle-and-faults.md, on every installed adapter's example model.

Each bad input raises a ``BadInputError`` (or ``UnknownArgumentError``) whose message says what was
wrong, before anything reaches the HF model; the good-but-unusual inputs (1-D tokens with a 1-D mask)
run and equal their canonical form."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bridge
from bridge.kernel.errors import BadInputError, UnknownArgumentError
from bridge.kernel.plugins import get_registry
from bridge.kernel.validation import n_ctx_is_limit
from bridge.testing import build_tiny_model, examples_of, tiny_tokenizer

# Language models: token inputs and LM heads (image models have their own checks in bridge_vision).
ADAPTERS = [adapter for info in get_registry().plugins for adapter in info.adapters if adapter.modalities == ("text",)]
_MODELS: dict[type, bridge.Bridge] = {}


def model_for(adapter: type) -> bridge.Bridge:
    if adapter not in _MODELS:
        config = examples_of(adapter).example_config()
        _MODELS[adapter] = bridge.wrap(build_tiny_model(config), tiny_tokenizer(config.vocab_size), adapter=adapter)
    return _MODELS[adapter]


def ok_tokens(model: bridge.Bridge, pos: int = 5) -> torch.Tensor:
    return torch.arange(1, pos + 1).remainder(model.cfg.d_vocab - 1)[None] + 1  # [1, pos], ids in 1..d_vocab-1


#: (case id, call(model) -> None, error class, message pattern). The README table lists the same rows.
BAD_INPUTS = [
    ("id >= d_vocab", lambda m: m(torch.tensor([[1, m.cfg.d_vocab]])), BadInputError, "out of range"),
    ("negative id", lambda m: m(torch.tensor([[1, -1]])), BadInputError, "out of range"),
    ("0-D tensor", lambda m: m(torch.tensor(3)), BadInputError, r"\[pos\] or \[batch, pos\].*0-D"),
    ("3-D tensor", lambda m: m(torch.ones(1, 2, 3, dtype=torch.long)), BadInputError, r"3-D.*\(1, 2, 3\)"),
    ("float tensor", lambda m: m(torch.ones(1, 3)), BadInputError, r"integer.*torch\.float32"),
    ("no tokens", lambda m: m(torch.ones(1, 0, dtype=torch.long)), BadInputError, "no token"),
    ("empty list", lambda m: m([]), BadInputError, "empty list"),
    ("empty string", lambda m: m("", prepend_bos=False), BadInputError, "no token"),
    ("list of ints", lambda m: m([1, 2, 3]), BadInputError, r"torch\.tensor"),
    (
        "mask shape",
        lambda m: m(ok_tokens(m), attention_mask=torch.ones(1, 4, dtype=torch.long)),
        BadInputError,
        r"attention_mask has shape \(1, 4\).*\(1, 5\)",
    ),
    (
        "mask all zero",
        lambda m: m(ok_tokens(m), attention_mask=torch.zeros(1, 5, dtype=torch.long)),
        BadInputError,
        "masks every token",
    ),
    ("mask values", lambda m: m(ok_tokens(m), attention_mask=torch.full((1, 5), 2)), BadInputError, "0 .* and 1"),
    ("return_type typo", lambda m: m(ok_tokens(m), return_type="logit"), BadInputError, "'logits'"),
    ("unknown kwarg", lambda m: m(ok_tokens(m), stop_at_layers=1), UnknownArgumentError, "'stop_at_layer'"),
    ("one-token loss", lambda m: m(ok_tokens(m, 1), return_type="loss"), BadInputError, "at least 2 tokens"),
    ("start_at_layer tokens", lambda m: m(ok_tokens(m), start_at_layer=1), BadInputError, "residual stream"),
]


def _applies(model: bridge.Bridge, case: str) -> bool:
    if case == "one-token loss":  # models scored against labels= have no next-token loss to refuse
        return model.unembed is not None and model.adapter.loss_kind == "next_token"
    return True


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.__name__)
@pytest.mark.parametrize(("case", "call", "error", "pattern"), BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_raises_a_clear_error(adapter, case, call, error, pattern):
    model = model_for(adapter)
    if not _applies(model, case):
        pytest.skip(f"{case} does not apply to {adapter.__name__}")
    with pytest.raises(error, match=pattern):
        call(model)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.__name__)
def test_too_long_for_learned_positions(adapter):
    model = model_for(adapter)
    too_long = torch.ones(1, (model.cfg.n_ctx or 64) + 1, dtype=torch.long)
    if not n_ctx_is_limit(model.cfg):
        assert model(too_long, return_type=None) is None  # rotary / ALiBi / SSM: no table to run past
        return
    with pytest.raises(BadInputError, match=f"n_ctx={model.cfg.n_ctx}"):
        model(too_long)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.__name__)
def test_one_dimensional_tokens_and_mask_run_as_a_batch_of_one(adapter):
    model = model_for(adapter)
    tokens = ok_tokens(model, 6)[0]
    mask = torch.tensor([0, 1, 1, 1, 1, 1])
    return_type = "logits" if model.unembed is not None else "hidden"
    flat = model(tokens, attention_mask=mask, return_type=return_type)
    batched = model(tokens[None], attention_mask=mask[None], return_type=return_type)
    torch.testing.assert_close(flat, batched, atol=0, rtol=0)
    torch.testing.assert_close(model(tokens, return_type=return_type), model(tokens[None], return_type=return_type))


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.__name__)
@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.uint8])
def test_narrow_integer_tokens_run_as_long(adapter, dtype):
    """Found by hypothesis: int16 ids crashed inside the HF embedding."""
    model = model_for(adapter)
    tokens = ok_tokens(model, 6)
    return_type = "logits" if model.unembed is not None else "hidden"
    expected = model(tokens, return_type=return_type)
    torch.testing.assert_close(model(tokens.to(dtype), return_type=return_type), expected, atol=0, rtol=0)


DTYPES = [torch.long, torch.int32, torch.int16, torch.float32, torch.bool]


@pytest.mark.parametrize("adapter", [a for a in ADAPTERS if a.__name__ in ("GPT2Adapter", "LlamaAdapter")])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_tensor_input_runs_or_raises_bad_input(adapter, data):
    """Whatever tensor comes in, the bridge either runs it (exactly when it is valid token ids) or raises
    ``BadInputError``: never an error from deep inside the HF model."""
    model = model_for(adapter)
    d_vocab, n_ctx = model.cfg.d_vocab, model.cfg.n_ctx
    ndim = data.draw(st.integers(0, 3), label="ndim")
    shape = data.draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim), label="shape")
    if ndim and data.draw(st.booleans(), label="long"):
        shape[-1] = data.draw(st.integers(n_ctx - 1, n_ctx + 2), label="pos")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    low, high = data.draw(st.sampled_from([(0, d_vocab), (-2, d_vocab), (0, d_vocab + 2)]), label="range")
    tokens = torch.randint(low, high, tuple(shape)).to(dtype)
    valid = (
        dtype in (torch.long, torch.int32, torch.int16)
        and ndim in (1, 2)
        and tokens.numel() > 0
        and int(tokens.min()) >= 0
        and int(tokens.max()) < d_vocab
        and (not n_ctx_is_limit(model.cfg) or shape[-1] <= n_ctx)
    )
    if valid:
        assert model(tokens, return_type=None) is None
    else:
        with pytest.raises(BadInputError):
            model(tokens, return_type=None)
