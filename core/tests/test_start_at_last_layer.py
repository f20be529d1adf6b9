"""``forward(residual, start_at_layer=n_layers)``: the residual stream entering the final norm goes through the
final norm and the unembedding (TransformerLens's semantics), for every ``return_type``.

Reference: the model's own full forward pass on the tokens (the residual comes from ``stop_at_layer=n_layers``)."""

import pytest
import torch

from bridge.kernel.errors import BadInputError


@pytest.fixture
def tokens(gpt2):
    return torch.randint(1, gpt2.cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(0))


def test_every_return_type_applies_the_final_norm_and_the_unembedding(gpt2, tokens):
    n = gpt2.cfg.n_layers
    with torch.no_grad():
        residual = gpt2(tokens, stop_at_layer=n)  # [b, p, d_model], entering ln_final
        logits, loss = gpt2(tokens, return_type="both")
        hidden = gpt2(tokens, return_type="hidden")
        got_logits = gpt2(residual, start_at_layer=n)
        got_loss = gpt2(residual, start_at_layer=n, tokens=tokens, return_type="loss")
        got_both = gpt2(residual, start_at_layer=n, tokens=tokens, return_type="both")
        got_hidden = gpt2(residual, start_at_layer=n, return_type="hidden")
        nothing = gpt2(residual, start_at_layer=n, return_type=None)
    assert got_logits.shape == logits.shape == (2, 9, gpt2.cfg.d_vocab)
    torch.testing.assert_close(got_logits, logits, atol=1e-5, rtol=1e-5)  # fp32: same ops, same order
    torch.testing.assert_close(got_loss, loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_both[0], logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_hidden, hidden, atol=1e-6, rtol=1e-6)
    assert nothing is None


def test_negative_start_and_hooks_after_the_blocks(gpt2, tokens):
    n = gpt2.cfg.n_layers
    seen = []
    with torch.no_grad():
        residual = gpt2(tokens, stop_at_layer=n)
        expected = gpt2(tokens)
        got = gpt2.run_with_hooks(
            residual,
            start_at_layer=n,
            fwd_hooks=[
                (lambda name: name.startswith(("ln_final", "blocks.0.")), lambda t, hook: seen.append(hook.name))
            ],
        )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert seen == ["ln_final.hook_scale", "ln_final.hook_normalized"]  # blocks before stay silent


def test_start_and_stop_at_the_last_layer_is_the_identity(gpt2, tokens):
    n = gpt2.cfg.n_layers
    residual = torch.randn(2, 9, gpt2.cfg.d_model)
    assert gpt2(residual, start_at_layer=n, stop_at_layer=n) is residual
    with pytest.raises(BadInputError, match="needs the tokens"):
        gpt2(residual, start_at_layer=n, return_type="loss")
