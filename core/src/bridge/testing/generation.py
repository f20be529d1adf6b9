"""Generation checks for a ``Pair``: ``Bridge.generate`` against HF's ``generate`` and against a
reference loop without a KV cache written here on the HF reference model (steering applied by a
plain torch forward hook on the reference's block, never through the bridge)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path

import torch

from bridge.kernel.errors import BridgeError
from bridge.kernel.tiny import TINY_EOS_ID, TINY_PAD_ID
from bridge.testing.examples import AdapterLike, examples_of
from bridge.testing.fixtures import save_tiny_model
from bridge.testing.pair import Pair, make_pair

TOLERANCE = 1e-4  # the lively (std 0.5) models of the generation checks: their own, looser scale
STEERED_LAYER = 0
LIVELY_INIT = 0.5  # weight init std: HF's 0.02 makes most tiny models repeat one token forever


def lively_pair(
    adapter: AdapterLike, directory: str | Path, architecture: str | None = None, init: float | None = LIVELY_INIT
) -> Pair:
    """``make_pair`` on the adapter's example model initialised with weight std ``init`` (``None``: HF's
    default), chosen so that greedy continuations depend on the context. Saved to ``directory``
    unless it already holds a model."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        config = examples_of(adapter).tiny_config(architecture)
        if init is not None:
            config.initializer_range = init
        save_tiny_model(config, directory, matrices=False)
    return make_pair(adapter, architecture, directory=directory)


def reference_block(pair: Pair, layer: int) -> torch.nn.Module:
    """Block ``layer`` of the HF reference model (found through the adapter's component map)."""
    cmap = pair.bridge.adapter.component_map(pair.bridge.cfg)
    root = pair.reference.base_model if cmap.root is None else pair.reference.get_submodule(cmap.root)
    return root.get_submodule(cmap.blocks)[layer]


@contextlib.contextmanager
def steering(block: torch.nn.Module, vector: torch.Tensor) -> Iterator[None]:
    """Add ``vector`` ``[d_model]`` to the block's output hidden states (a torch forward hook)."""

    def add(_module: torch.nn.Module, _args: tuple, output):
        if isinstance(output, tuple):
            return (output[0] + vector, *output[1:])
        return output + vector

    handle = block.register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def greedy_without_cache(
    model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor, max_new_tokens: int
) -> torch.Tensor:
    """Greedy decoding by a full forward of the whole sequence per step, ``[b, p + new]``."""
    takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    for _ in range(max_new_tokens):
        kwargs = {"attention_mask": mask, "use_cache": False}
        if takes_positions:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # [b, pos]: real tokens count
        with torch.no_grad():
            logits = model(tokens, **kwargs).logits
        next_token = logits[:, -1].argmax(-1, keepdim=True)  # [b, 1]
        tokens = torch.cat([tokens, next_token], dim=1)
        mask = torch.cat([mask, torch.ones_like(next_token)], dim=1)
    return tokens


def left_padded(prompts: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D prompts of different lengths, left-padded: tokens and mask ``[b, max_len]``."""
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        tokens[i, width - len(prompt) :] = prompt
        mask[i, width - len(prompt) :] = 1
    return tokens, mask


def check_greedy_matches_hf_generate(pair: Pair, batch: int = 2, pos: int = 6, new: int = 8) -> None:
    """Greedy ``generate`` equals the reference's ``generate(do_sample=False)`` token for token
    (both stopping at the tiny tokenizer's EOS, ``TINY_EOS_ID``; a finished row is padded with EOS by the bridge,
    with the pad token by HF)."""
    prompt = pair.tokens(batch, pos, seed=1)
    expected = pair.reference.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new,
        do_sample=False,
        eos_token_id=TINY_EOS_ID,
        pad_token_id=TINY_PAD_ID,
    )
    got = pair.bridge.generate(prompt, max_new_tokens=new, do_sample=False, eos_token_id=TINY_EOS_ID, verbose=False)
    torch.testing.assert_close(got, _eos_padded(expected, pos), rtol=0, atol=0)
    assert max(len(set(row[pos:].tolist())) for row in got) > 2, "greedy repeats itself: use lively_pair"


def _eos_padded(tokens: torch.Tensor, pos: int) -> torch.Tensor:
    """HF's output with each row's tokens after its first generated EOS set to EOS: a finished row is padded with
    EOS by ``Bridge.generate`` (as TransformerLens does), with ``pad_token_id`` by HF."""
    generated = tokens[:, pos:]
    finished = (generated == TINY_EOS_ID).int().cumsum(dim=1) > 0  # at and after the first EOS
    return torch.cat([tokens[:, :pos], torch.where(finished, TINY_EOS_ID, generated)], dim=1)


def check_steered_matches_reference_loop(pair: Pair, pos: int = 5, new: int = 6, scale: float = 1.0) -> None:
    """A vector added at ``blocks.0.hook_resid_post`` steers ``generate`` (KV cache or not) exactly as
    the same vector added to the reference's block output steers a cache-free greedy loop."""
    prompt = pair.tokens(2, pos, seed=2)
    with torch.no_grad():
        resid = pair.reference(prompt, output_hidden_states=True).hidden_states[STEERED_LAYER + 1]
    rms = resid.pow(2).mean().sqrt()  # the vector's size is relative to the residual stream's
    vector = scale * rms * torch.randn(pair.bridge.cfg.d_model, generator=torch.Generator().manual_seed(3))
    with steering(reference_block(pair, STEERED_LAYER), vector):
        expected = greedy_without_cache(pair.reference, prompt, torch.ones_like(prompt), new)
    plain = greedy_without_cache(pair.reference, prompt, torch.ones_like(prompt), new)
    assert not torch.equal(expected, plain), "the steering vector changes nothing: raise `scale`"
    hook = (f"blocks.{STEERED_LAYER}.hook_resid_post", lambda t, hook: t + vector)
    for use_cache in (True, False):
        got = pair.bridge.generate(
            prompt,
            max_new_tokens=new,
            do_sample=False,
            stop_at_eos=False,
            verbose=False,
            use_past_kv_cache=use_cache,
            fwd_hooks=[hook],
        )
        torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=f"use_past_kv_cache={use_cache}")


def check_batched_left_padding_matches_one_by_one(pair: Pair, lengths: tuple[int, ...] = (7, 3, 5), new: int = 6):
    """Prompts of different lengths, left-padded in one batch, generate what each does alone."""
    prompts = [pair.tokens(1, n, seed=10 + i)[0] for i, n in enumerate(lengths)]
    tokens, mask = left_padded(prompts)
    batched = pair.bridge.generate(
        tokens, attention_mask=mask, max_new_tokens=new, do_sample=False, stop_at_eos=False, verbose=False
    )
    width = tokens.shape[1]
    for i, prompt in enumerate(prompts):
        alone = pair.bridge.generate(prompt, max_new_tokens=new, do_sample=False, stop_at_eos=False, verbose=False)
        torch.testing.assert_close(batched[i, width - len(prompt) :], alone[0], rtol=0, atol=0, msg=f"prompt {i}")
        expected = greedy_without_cache(pair.reference, prompt[None], torch.ones_like(prompt[None]), new)
        torch.testing.assert_close(alone, expected, rtol=0, atol=0, msg=f"prompt {i} against the reference")


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, tolerance: float, msg: str = "") -> None:
    """Equal up to ``tolerance`` times the largest magnitude in ``expected`` (the lively models'
    activations run to the hundreds, and float error grows with them)."""
    magnitudes = expected.abs()
    scale = max(1.0, magnitudes[magnitudes < 1e30].max().item())  # masked scores (the dtype's min) aside
    torch.testing.assert_close(actual, expected, atol=tolerance * scale, rtol=0, msg=msg)


@contextlib.contextmanager
def capture_output(block: torch.nn.Module, store: list[torch.Tensor]) -> Iterator[None]:
    """Append the block's output hidden states to ``store`` on every call (a torch forward hook)."""

    def save(_module: torch.nn.Module, _args: tuple, output) -> None:
        store.append((output[0] if isinstance(output, tuple) else output).detach())

    handle = block.register_forward_hook(save)
    try:
        yield
    finally:
        handle.remove()


def check_step_caches_match_reference(pair: Pair, pos: int = 5, new: int = 5) -> None:
    """The per-step activations (``names_filter``) of block 0's output and of every attention pattern
    equal the reference's block output (a torch forward hook) and ``attentions`` in one cache-free
    forward over the output."""
    model = pair.bridge
    patterns = [n for n in model.hook_dict if n.endswith("attn.hook_pattern")]
    names = [f"blocks.{STEERED_LAYER}.hook_resid_post", *patterns]
    prompt = pair.tokens(2, pos, seed=4)
    for use_cache in (True, False):
        tokens, steps = model.generate(
            prompt,
            max_new_tokens=new,
            do_sample=False,
            stop_at_eos=False,
            verbose=False,
            use_past_kv_cache=use_cache,
            names_filter=names,
        )
        block_out: list[torch.Tensor] = []
        with torch.no_grad(), capture_output(reference_block(pair, STEERED_LAYER), block_out):
            ref = pair.reference(tokens[:, :-1], output_attentions=bool(patterns))
        assert len(steps) == new
        assert steps[-1][names[0]].shape[1] == (1 if use_cache else pos + new - 1)
        stacked = steps.stack()
        assert_close_to_scale(stacked[names[0]], block_out[0], 1e-5, f"{names[0]}, use_cache={use_cache}")
        attentions = getattr(ref, "attentions", None) or ()  # an SSM's output has none
        per_block = len(attentions) == len(model.blocks)  # a hybrid's: one per attention layer, in order
        for index, name in enumerate(patterns):
            expected = attentions[int(name.split(".")[1]) if per_block else index]
            assert_close_to_scale(stacked[name], expected, TOLERANCE, f"{name}, use_cache={use_cache}")


def check_every_hook_fires_each_step(pair: Pair, pos: int = 5, new: int = 4, exclude: tuple[str, ...] = ()) -> None:
    """Every enabled hook (but those ending with a suffix in ``exclude``) fires once per step, prompt
    first, and its stacked activations equal a cache-free forward over the output (the forward the
    conformance kit checks against HF). Hooks that cannot be stacked (ALiBi's ``hook_alibi`` has no
    position axis; ``hook_rot_k`` sees a sliding window's cache) are only counted."""
    model = pair.bridge
    names = [n for n, h in model.hook_dict.items() if h.enabled and not n.endswith(exclude)]
    tokens, steps = model.generate(
        pair.tokens(2, pos, seed=5),
        max_new_tokens=new,
        do_sample=False,
        stop_at_eos=False,
        verbose=False,
        names_filter=names,
    )
    assert len(steps) == new and all(set(step) == set(names) for step in steps)
    _, full = model.run_with_cache(tokens[:, :-1], names_filter=names)
    for name in names:
        try:
            stacked = steps.stack([name])[name]
        except BridgeError:
            if name.endswith(("hook_alibi", "hook_rot_k")):
                continue
            raise
        assert_close_to_scale(stacked, full[name], TOLERANCE, name)


GENERATION_CHECKS = (
    check_greedy_matches_hf_generate,
    check_steered_matches_reference_loop,
    check_batched_left_padding_matches_one_by_one,
    check_step_caches_match_reference,
    check_every_hook_fires_each_step,
)
