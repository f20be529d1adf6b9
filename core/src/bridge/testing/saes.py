"""SAE splicing checks for any family: the bridge with an SAE against the HF reference with a torch hook.

The reference never touches the bridge: a plain torch forward hook on the HF module whose output is
the hook point replaces that output by ``decode(encode(output))`` (with whatever change to the latents
a check makes), on the pair's independent HF model.

    pair = make_pair(MyAdapter)
    check_sae_splice(pair, "blocks.0.hook_resid_post", "model.layers.0")
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from bridge.testing.compare import TOLERANCE
from bridge.testing.pair import Pair

Latents = Callable[[torch.Tensor], torch.Tensor]


class TinySAE(nn.Module):
    """A random ReLU SAE with only ``encode``/``decode`` (no hook points of its own)."""

    def __init__(self, d_in: int, d_sae: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.W_enc = nn.Parameter(torch.randn(d_in, d_sae, generator=generator, dtype=dtype) / d_in**0.5)
        self.b_enc = nn.Parameter(0.1 * torch.randn(d_sae, generator=generator, dtype=dtype))
        self.W_dec = nn.Parameter(torch.randn(d_sae, d_in, generator=generator, dtype=dtype) / d_sae**0.5)
        self.b_dec = nn.Parameter(0.1 * torch.randn(d_in, generator=generator, dtype=dtype))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in]`` → ``[..., d_sae]``."""
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """``[..., d_sae]`` → ``[..., d_in]``."""
        return acts @ self.W_dec + self.b_dec


def _first(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # type: ignore[return-value]


@contextlib.contextmanager
def spliced_reference(
    module: nn.Module, sae: nn.Module, latents: Latents = lambda a: a, record: dict | None = None
) -> Iterator[None]:
    """Replace ``module``'s output (or its first element) by ``sae.decode(latents(sae.encode(output)))``;
    ``record`` receives the output, the latents (``"acts"``, with gradients retained) and the reconstruction."""

    def hook(_module: nn.Module, _args: tuple, out: object) -> object:
        x = _first(out)
        acts = sae.encode(x)
        if acts.requires_grad:
            acts.retain_grad()
        acts = latents(acts)
        recons = sae.decode(acts)
        if record is not None:
            record.update(input=x, acts=acts, recons=recons)
        return (recons, *out[1:]) if isinstance(out, tuple) else recons

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _moved_by_decode(module: nn.Module, sae: nn.Module, latents: Latents) -> Iterator[None]:
    """Replace ``module``'s output ``x`` by ``x + decode(latents(encode(x))) - decode(encode(x))``: an error-term
    splice whose latents ``latents`` changes."""

    def hook(_module: nn.Module, _args: tuple, out: object) -> object:
        x = _first(out)
        acts = sae.encode(x)
        moved = x + sae.decode(latents(acts)) - sae.decode(acts)
        return (moved, *out[1:]) if isinstance(out, tuple) else moved

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _attached(pair: Pair) -> list[str]:
    return [type(a).__name__ for c in pair.bridge.components() for a in c._attachments if a.attached]


def check_sae_splice(
    pair: Pair, hook_name: str, module_path: str, d_sae: int = 16, tolerance: float = TOLERANCE
) -> None:
    """Splice a ``TinySAE`` into ``hook_name`` (the output of HF module ``module_path``) and compare with the
    reference: outputs, cached SAE activations, a zeroed latent, the error term, backward hooks, reset."""
    model, tokens = pair.bridge, pair.tokens(batch=2, pos=7)
    module = pair.reference.get_submodule(module_path)
    hook_names_before = list(model.hook_dict)
    attached_before = _attached(pair)
    with torch.no_grad():
        plain = pair.reference_output(tokens)
        d_in = model.run_with_cache(tokens, names_filter=hook_name)[1][hook_name].shape[-1]
    sae = TinySAE(d_in, d_sae)
    prefix = f"{hook_name}."

    # splice vs reference, and the SAE's activations as the reference computes them
    record: dict = {}
    with torch.no_grad(), spliced_reference(module, sae, record=record):
        expected = pair.reference_output(tokens)
    with torch.no_grad():
        out, cache = model.run_with_cache_with_saes(tokens, saes=[(hook_name, sae)])
    assert (expected - plain).abs().max() > 1e-3, "the SAE does not change the output: the check would prove nothing"
    torch.testing.assert_close(out, expected, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(cache[prefix + "hook_sae_input"], record["input"], atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(cache[hook_name], record["input"], atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(cache[prefix + "hook_sae_acts_post"], record["acts"], atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(cache[prefix + "hook_sae_recons"], record["recons"], atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(cache[prefix + "hook_sae_output"], record["recons"], atol=tolerance, rtol=tolerance)
    assert prefix + "hook_sae_error" not in cache  # fires with the error term only

    # patching a latent: zeroing the most active one equals the reference with it zeroed
    latent = int(record["acts"].flatten(0, -2).sum(0).argmax())

    def zero(acts: torch.Tensor, hook: object = None) -> torch.Tensor:
        acts = acts.clone()
        acts[..., latent] = 0
        return acts

    with torch.no_grad(), spliced_reference(module, sae, latents=zero):
        expected_zeroed = pair.reference_output(tokens)
    with torch.no_grad(), model.saes([(hook_name, sae)]):
        zeroed = model.run_with_hooks(tokens, fwd_hooks=[(prefix + "hook_sae_acts_post", zero)])
    assert (expected_zeroed - expected).abs().max() > 1e-4, "zeroing the latent changes nothing"
    torch.testing.assert_close(zeroed, expected_zeroed, atol=tolerance, rtol=tolerance)

    # the error term: the model's output is unchanged (up to float rounding), and patches stay visible
    with torch.no_grad(), model.saes([(hook_name, sae)], use_error_term=True):
        unchanged, error_cache = model.run_with_cache(tokens)
        patched = model.run_with_hooks(tokens, fwd_hooks=[(prefix + "hook_sae_acts_post", zero)])
    with torch.no_grad():
        unspliced_bridge = pair.output(tokens)
    torch.testing.assert_close(error_cache[prefix + "hook_sae_output"], error_cache[hook_name], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(unchanged, unspliced_bridge, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(unchanged, plain, atol=tolerance, rtol=tolerance)
    error = error_cache[prefix + "hook_sae_input"] - error_cache[prefix + "hook_sae_recons"]
    torch.testing.assert_close(error_cache[prefix + "hook_sae_error"], error, atol=TOLERANCE, rtol=0)
    # zeroing a latent with the error term moves the activation by exactly decode's change: the reference with
    # x + decode(zeroed latents) - decode(latents) at the hook point
    with torch.no_grad(), _moved_by_decode(module, sae, zero):
        expected_patched = pair.reference_output(tokens)
    assert (expected_patched - plain).abs().max() > 1e-3, "zeroing the latent barely moves the output"
    torch.testing.assert_close(patched, expected_patched, atol=tolerance, rtol=tolerance)

    # backward hooks on the SAE's latents vs autograd through the reference
    grads: dict = {}
    record = {}
    with spliced_reference(module, sae, record=record):
        pair.reference_output(tokens).float().pow(2).mean().backward()
    with model.saes([(hook_name, sae)]):
        model.run_with_hooks(
            tokens,
            bwd_hooks=[(prefix + "hook_sae_acts_post", lambda g, hook: grads.__setitem__("acts", g))],
            return_type="logits" if pair.has_head else "hidden",
        ).float().pow(2).mean().backward()
    torch.testing.assert_close(grads["acts"], record["acts"].grad, atol=tolerance, rtol=tolerance)

    # reset leaves nothing: hook_dict as before, no attachment, the plain output
    model.add_sae(sae, hook_name=hook_name)
    assert model.acts_to_saes == {hook_name: sae}
    assert prefix + "hook_sae_acts_post" in model.hook_dict
    model.reset_saes()
    assert list(model.hook_dict) == hook_names_before
    assert model.acts_to_saes == {}
    assert _attached(pair) == attached_before
    assert type(model.hook_dict[hook_name]).__name__ == "HookPoint"
    with torch.no_grad():
        torch.testing.assert_close(pair.output(tokens), plain, atol=tolerance, rtol=tolerance)


__all__ = ["TinySAE", "check_sae_splice", "spliced_reference"]
