"""The conformance checks (what "correct" means for a bridged model), reusable by every plugin.

Each check takes a ``Pair``: a bridge loaded through ``bridge.load`` and an independent
HF reference model (same weights, eager attention) to compare with. ``path="hooked"``
runs the bridge with a no-op hook on every ``hook_pattern``, forcing the seam's eager path.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

import bridge
from bridge.adapter import Adapter
from bridge.components.attention import weight_in_out
from bridge.errors import HookNameError
from bridge.model import Bridge
from bridge.testing.fixtures import build_tiny_model, save_tiny_model
from bridge.towers import TowerModule

TOLERANCE = 1e-4
AttnPath = Literal["native", "hooked"]


@dataclass
class Pair:
    """A bridged model and an HF reference with the same weights."""

    bridge: Bridge
    reference: torch.nn.Module
    path: AttnPath = "native"

    @property
    def has_head(self) -> bool:
        return self.bridge.unembed is not None

    def _example(self, batch: int, seed: int) -> Any:
        return type(self.bridge.adapter).example_input(self.bridge.hf_model.config, batch, seed)

    def tokens(self, batch: int = 2, pos: int = 12, seed: int = 0) -> Any:
        """The model input: random tokens ``[batch, pos]``, or, for a model that does not read tokens alone,
        its adapter's example input (a dict of HF inputs; ``pos`` is then the adapter's)."""
        example = self._example(batch, seed)
        if example is not None:
            return dict(example.inputs)
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(1, self.bridge.cfg.d_vocab, (batch, pos), generator=generator)

    def shapes(self, batch: int = 2, pos: int = 12, seed: int = 0) -> dict[str, tuple[int, int]]:
        """``(batch, positions)`` the blocks of each part see for ``tokens(batch, pos, seed)`` (see ``parts``)."""
        example = self._example(batch, seed)
        return dict(example.shapes) if example is not None else {"": (batch, pos)}

    def parts(self) -> list[tuple[str, Any]]:
        """``("", bridge)`` for a plain model; ``("vision.", tower)``… for each tower of a composite one."""
        towers = [(f"{name}.", m) for name, m in self.bridge.named_children() if isinstance(m, TowerModule)]
        return towers or [("", self.bridge)]

    @property
    def return_type(self) -> str:
        """What the checks compare: logits where the model has them, else the final hidden state."""
        fields = self.bridge.adapter.output_fields
        if fields is None:
            return "logits" if self.has_head else "hidden"
        return "logits" if "logits" in fields else "hidden"

    @property
    def scalar_return_type(self) -> str:
        """What gradient checks differentiate (summed): the loss of language models, else ``return_type``."""
        lm_head = self.bridge.adapter.output_fields is None and self.has_head
        return "loss" if lm_head else self.return_type

    @contextlib.contextmanager
    def on_path(self) -> Iterator[None]:
        """Force the eager seam path with no-op pattern hooks when ``path == "hooked"``."""
        if self.path == "native":
            yield
            return
        with self.bridge.hooks(fwd_hooks=[(lambda n: n.endswith("attn.hook_pattern"), lambda t, hook: None)]):
            yield

    def output(self, tokens: Any, **kwargs: Any) -> torch.Tensor:
        return self.bridge(tokens, return_type=self.return_type, **kwargs)

    def run_reference(self, tokens: Any, model: torch.nn.Module | None = None, **kwargs: Any) -> Any:
        """The HF reference's own output object for the input ``tokens()`` gave."""
        model = model or self.reference
        return model(**tokens, **kwargs) if isinstance(tokens, Mapping) else model(tokens, **kwargs)

    def reference_output(self, tokens: Any, model: torch.nn.Module | None = None, **kwargs: Any):
        out = self.run_reference(tokens, model, **kwargs)
        fields = self.bridge.adapter.output_fields
        if fields is not None:
            return getattr(out, fields[self.return_type])
        return out.logits if self.has_head else out.last_hidden_state


def make_pair(
    adapter: type[Adapter],
    architecture: str | None = None,
    path: AttnPath = "native",
    directory: str | Path | None = None,
    seed: int = 0,
) -> Pair:
    """Save the adapter's example model (unless ``directory`` already holds one), load it with
    ``bridge.load``, and build an independent HF reference with eager attention."""
    directory = Path(directory or tempfile.mkdtemp(prefix="bridge-conformance-"))
    if not (directory / "config.json").exists():
        save_tiny_model(adapter.tiny_config(architecture), directory, seed=seed)
    model = bridge.load(directory, adapter=adapter)
    reference = adapter.reference_model(type(model.hf_model), directory)
    return Pair(model, reference, path)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def check_logits_match(pair: Pair) -> None:
    """Logits (hidden states for headless models) equal HF's with no hooks and with every hook cached."""
    tokens = pair.tokens()
    expected = pair.reference_output(tokens)
    with pair.on_path():
        plain = pair.output(tokens)
    assert _max_diff(plain, expected) <= TOLERANCE, f"no-hook output differs by {_max_diff(plain, expected)}"
    with pair.on_path():
        cached, cache = pair.bridge.run_with_cache(tokens, return_type=pair.return_type)
    assert len(cache) >= len([h for h in pair.bridge.hook_points() if h.enabled and not h.decode_only])
    assert _max_diff(cached, expected) <= TOLERANCE, f"cache-all output differs by {_max_diff(cached, expected)}"


def check_hooks_match_hf(pair: Pair) -> None:
    """``hook_resid_post`` equals HF ``hidden_states``; ``hook_pattern`` equals HF eager ``attentions``
    (per tower for composite models, from the adapter's ``tower_outputs``)."""
    tokens = pair.tokens()
    ref = pair.run_reference(tokens, output_hidden_states=True, output_attentions=True)
    with pair.on_path():
        _, cache = pair.bridge.run_with_cache(
            tokens, return_type=None, names_filter=lambda n: n.endswith(("resid_post", "hook_pattern"))
        )
    for prefix, part in pair.parts():
        field = pair.bridge.adapter.tower_outputs.get(prefix[:-1])
        _check_part_hooks(pair, cache, prefix, part, getattr(ref, field) if field else ref)


def _check_part_hooks(pair: Pair, cache: Any, prefix: str, part: Any, ref: Any) -> None:
    n = len(part.blocks)
    expected = ref.hidden_states[1:] if pair.bridge.adapter.hidden_states_include_embeddings else ref.hidden_states
    got = [cache[f"{prefix}blocks.{layer}.{part.blocks[layer].output_hook}"] for layer in range(n)]
    if part.ln_final is not None and pair.bridge.adapter.final_norm_in_hidden_states:  # HF's last: ln_final(last)
        final = part.ln_final.hf(got[-1])
        got = [*got[:-1], final] if len(expected) == n else [*got, final]
    assert len(got) == len(expected), f"{len(expected)} HF hidden states for {n} blocks"
    for layer in range(n):
        diff = _max_diff(got[layer], expected[layer])
        assert diff <= TOLERANCE, f"{prefix}blocks.{layer}.hook_resid_post differs from HF hidden_states by {diff}"
        pattern = f"{prefix}blocks.{layer}.attn.hook_pattern"
        if getattr(ref, "attentions", None) is not None and pattern in cache:
            diff = _max_diff(cache[pattern], ref.attentions[layer])
            assert diff <= TOLERANCE, f"{pattern} differs from HF attentions by {diff}"
    if len(got) > n:
        diff = _max_diff(got[n], expected[n])
        assert diff <= TOLERANCE, f"ln_final(last hook_resid_post) differs from HF's last hidden state by {diff}"


def check_residual_algebra(pair: Pair) -> None:
    """Each block's residual identities (``Block.algebra``, e.g. ``resid_mid = resid_pre + attn_out``,
    ``resid_post = resid_mid + mlp_out``) hold, also while block 0's first sublayer output is patched."""
    tokens = pair.tokens()
    generator = torch.Generator().manual_seed(1)
    prefix, first_part = pair.parts()[0]
    patched = f"{prefix}blocks.0.{first_part.blocks[0].algebra[0][1][-1]}"

    def patch(t: torch.Tensor, hook: Any) -> torch.Tensor:
        return t + torch.randn(t.shape, generator=generator)

    with pair.on_path(), pair.bridge.hooks(fwd_hooks=[(patched, patch)]):
        _, cache = pair.bridge.run_with_cache(tokens, return_type=None)
    for prefix, part in pair.parts():
        for layer, block in enumerate(part.blocks):
            assert block.algebra, f"{type(block).__name__} declares no residual algebra"
            for total, terms in block.algebra:
                expected = sum(cache[f"{prefix}blocks.{layer}.{t}"] for t in terms)
                diff = _max_diff(cache[f"{prefix}blocks.{layer}.{total}"], expected)
                assert diff <= TOLERANCE, f"{prefix}blocks.{layer}: {total} != {' + '.join(terms)} (off by {diff})"
        for layer in range(1, len(part.blocks)):
            output = part.blocks[layer - 1].output_hook
            pre, post = f"{prefix}blocks.{layer}.hook_resid_pre", f"{prefix}blocks.{layer - 1}.{output}"
            assert torch.equal(cache[pre], cache[post])


def not_applicable(reason: str) -> None:
    """Skip a check that does not apply to this architecture (a pytest skip when run by pytest)."""
    try:
        import pytest
    except ImportError:
        return
    pytest.skip(reason)


def check_head_ablation(pair: Pair, layer: int = 0, head: int = 1) -> None:
    """Zeroing head ``head`` at ``hook_z`` equals zeroing its rows of the HF output projection (in the first
    part's blocks: the model's, or a composite model's first tower)."""
    tokens = pair.tokens()
    prefix, part = pair.parts()[0]
    attn = getattr(part.blocks[layer], "attn", None)
    if getattr(attn, "out_proj", None) is None or not hasattr(attn, "hook_z"):
        not_applicable(f"{pair.bridge.cfg.architecture} has no attention with an output projection in block {layer}")
        return

    def ablate(z: torch.Tensor, hook: Any) -> torch.Tensor:
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    with pair.on_path():
        got = pair.bridge.run_with_hooks(
            tokens,
            fwd_hooks=[(f"{prefix}blocks.{layer}.attn.hook_z", ablate)],
            return_type=pair.return_type,
        )
    surgery = copy.deepcopy(pair.reference)
    out_proj = surgery.get_submodule(_hf_path(pair.bridge, attn.out_proj))
    d = weight_in_out(out_proj).shape[0] // part.cfg.n_heads  # z's head size (MLA: d_head_v)
    with torch.no_grad():
        weight_in_out(out_proj)[head * d : (head + 1) * d] = 0.0
    expected = pair.reference_output(tokens, model=surgery)
    assert _max_diff(got, expected) <= TOLERANCE, (
        f"head ablation differs from weight surgery by {_max_diff(got, expected)}"
    )
    assert _max_diff(expected, pair.reference_output(tokens)) > 1e-6, "ablating the head changed nothing"


def _hf_path(model: Bridge, module: torch.nn.Module) -> str:
    return next(name for name, m in model.hf_model.named_modules() if m is module)


def check_gradients(pair: Pair) -> None:
    """A backward hook receives d(loss)/d(activation), checked against autograd on a detached leaf."""
    tokens = pair.tokens(batch=1)
    names = [
        n for n in pair.bridge.hook_dict if n.endswith(("hook_resid_mid", "hook_z", "hook_resid_post", "hook_pre"))
    ]
    prefix = pair.parts()[0][0]
    names = [n for n in names if n.startswith(f"{prefix}blocks.0.")] or [next(iter(pair.bridge.hook_dict))]
    return_type = pair.scalar_return_type
    for name in names:
        got = _gradient_from_backward_hook(pair, tokens, name, return_type)
        expected = _gradient_from_autograd(pair, tokens, name, return_type)
        assert got is not None, f"backward hook on {name} never fired"
        assert _max_diff(got, expected) <= TOLERANCE, f"gradient at {name} is wrong"
        pair.bridge.hf_model.zero_grad(set_to_none=True)


def _scalar(out: torch.Tensor) -> torch.Tensor:
    return out if out.ndim == 0 else out.sum()


def _gradient_from_backward_hook(pair: Pair, tokens: torch.Tensor, name: str, return_type: str):
    grads: dict[str, torch.Tensor] = {}
    with pair.on_path():
        out = pair.bridge.run_with_hooks(
            tokens, bwd_hooks=[(name, lambda g, hook: grads.__setitem__("g", g))], return_type=return_type
        )
        _scalar(out).backward()
    return grads.get("g")


def _gradient_from_autograd(pair: Pair, tokens: torch.Tensor, name: str, return_type: str) -> torch.Tensor:
    """The reference: replace the activation by a detached leaf and ask autograd for its gradient."""
    leaf: dict[str, torch.Tensor] = {}

    def make_leaf(t: torch.Tensor, hook: Any) -> torch.Tensor:
        leaf["x"] = t.detach().requires_grad_(True)
        return leaf["x"]

    with pair.on_path():
        out = pair.bridge.run_with_hooks(tokens, fwd_hooks=[(name, make_leaf)], return_type=return_type)
    (gradient,) = torch.autograd.grad(_scalar(out), leaf["x"])
    return gradient


def check_no_dead_hooks(pair: Pair) -> None:
    """Every hook point fires on a forward pass (opt-in ones once enabled)."""
    model = pair.bridge
    opt_ins = sorted({n for n, h in model.hook_dict.items() if h.opt_in})
    for name in opt_ins:
        model.set_opt_in(name, True)
    fired: set[str] = set()
    try:
        with pair.on_path():
            model.run_with_hooks(
                pair.tokens(),
                fwd_hooks=[(lambda n: True, lambda t, hook: fired.add(hook.name))],
                return_type=None,
            )
    finally:
        for name in opt_ins:
            model.set_opt_in(name, False)
    expected = {n for n, h in model.hook_dict.items() if not h.decode_only}
    assert not expected - fired, f"hook points that never fired: {sorted(expected - fired)}"


def _attachments(model: Bridge) -> list[str]:
    """HF modules that currently carry a bridge override or torch hook."""
    return [
        name
        for name, m in model.hf_model.named_modules()
        if "forward" in m.__dict__ or m._forward_hooks or m._forward_pre_hooks
    ]


def check_no_leaks(pair: Pair) -> None:
    """After ``run_with_hooks``, ``hooks()`` exit or a raising hook, only the user's own hooks remain."""
    model = pair.bridge
    tokens = pair.tokens()
    assert _attachments(model) == [], f"HF modules altered with no hooks in use: {_attachments(model)}"
    prefix, part = pair.parts()[0]
    sublayer_out = f"{prefix}blocks.0.{part.blocks[0].algebra[-1][1][-1]}"  # hook_mlp_out, hook_mixer_out...
    resid_pre = f"{prefix}blocks.0.hook_resid_pre"
    permanent = model.add_hook(resid_pre, lambda t, hook: None, is_permanent=True)
    temporary = model.add_hook(sublayer_out, lambda t, hook: None)
    before = {n: (list(h.fwd_hooks), list(h.bwd_hooks)) for n, h in model.hook_dict.items()}

    def boom(t: torch.Tensor, hook: Any) -> None:
        raise RuntimeError("boom")

    with pair.on_path():
        try:
            model.run_with_hooks(tokens, fwd_hooks=[(_inner_hook(model, prefix), boom)], return_type=None)
        except RuntimeError:
            pass
        else:
            raise AssertionError("the hook's exception did not propagate")
        model.run_with_cache(tokens, return_type=None)
        with model.hooks(fwd_hooks=[(lambda n: True, lambda t, hook: None)]):
            model(tokens, return_type=None)
    after = {n: (list(h.fwd_hooks), list(h.bwd_hooks)) for n, h in model.hook_dict.items()}
    assert after == before, "hooks of finished calls were left attached, or the user's hooks were removed"
    model.reset_hooks()
    assert model.hook_dict[resid_pre].fwd_hooks == permanent
    assert temporary[0] not in model.hook_dict[sublayer_out].fwd_hooks
    model.reset_hooks(including_permanent=True)
    assert _attachments(model) == [], f"HF modules still altered after all hooks went: {_attachments(model)}"


def _inner_hook(model: Bridge, prefix: str = "") -> str:
    """A hook point inside block 0's sublayers: ``attn.hook_pattern`` if there is one, else the last one."""
    if f"{prefix}blocks.0.attn.hook_pattern" in model.hook_dict:
        return f"{prefix}blocks.0.attn.hook_pattern"
    depth = prefix.count(".") + 3
    inner = [n for n, h in model.hook_dict.items() if n.startswith(f"{prefix}blocks.0.") and n.count(".") == depth]
    return [n for n in inner if model.hook_dict[n].enabled][-1]


def check_misspelt_names(pair: Pair) -> None:
    """Misspelt hook names (last two letters swapped) raise with the close matches."""
    prefix, part = pair.parts()[-1]
    last = f"{prefix}blocks.{len(part.blocks) - 1}.hook_resid_post"
    for right in (_inner_hook(pair.bridge, prefix), last):
        wrong = right[:-2] + right[-1] + right[-2]
        try:
            pair.bridge.add_hook(wrong, lambda t, hook: None)
        except HookNameError as err:
            assert right in str(err), f"no suggestion of {right!r} in: {err}"
        else:
            raise AssertionError(f"{wrong!r} was accepted")


def check_shapes(pair: Pair) -> None:
    """Hook shapes follow the hook-name contract (TransformerLens shapes, batch first) in the blocks, the final
    norm and the embeddings of each part (a tower's own hooks, e.g. a norm of a pooled output, are outside it)."""
    batch, pos = 2, 7
    with pair.on_path():
        _, cache = pair.bridge.run_with_cache(pair.tokens(batch, pos), return_type=None)
    shapes = pair.shapes(batch, pos)
    for prefix, part in pair.parts():
        expected = _shape_contract(part.cfg, *shapes[prefix[:-1]])
        for name, tensor in cache.items():
            if not name.startswith(prefix):
                continue
            local = name[len(prefix) :]
            if not local.startswith(("blocks.", "ln_final.", "hook_embed", "hook_pos_embed")):
                continue
            for suffix, shape in expected.items():
                if local == suffix or local.endswith("." + suffix):
                    assert tuple(tensor.shape) == shape, f"{name}: shape {tuple(tensor.shape)}, contract says {shape}"


def _shape_contract(cfg: Any, b: int, p: int) -> dict[str, tuple[int, ...]]:
    return {
        "hook_resid_pre": (b, p, cfg.d_model),
        "hook_resid_post": (b, p, cfg.d_model),
        "hook_attn_out": (b, p, cfg.d_model),
        "hook_mlp_out": (b, p, cfg.d_model),
        "hook_scale": (b, p, 1),
        "hook_normalized": (b, p, cfg.d_model),
        "attn.hook_q": (b, p, cfg.n_heads, cfg.d_head),
        "attn.hook_rot_q": (b, p, cfg.n_heads, cfg.d_head),
        "attn.hook_k": (b, p, cfg.n_key_value_heads, cfg.d_head),
        "attn.hook_v": (b, p, cfg.n_key_value_heads, cfg.d_head_v),
        "attn.hook_rot_k": (b, p, cfg.n_key_value_heads, cfg.d_head),
        "attn.hook_attn_scores": (b, cfg.n_heads, p, p),
        "attn.hook_pattern": (b, cfg.n_heads, p, p),
        "attn.hook_z": (b, p, cfg.n_heads, cfg.d_head_v),
        "attn.hook_q_normed": (b, p, cfg.n_heads, cfg.d_head),
        "attn.hook_k_normed": (b, p, cfg.n_key_value_heads, cfg.d_head),
        "mlp.hook_pre": (b, p, cfg.d_mlp),
        "mlp.hook_post": (b, p, cfg.d_mlp),
        "mlp.hook_pre_linear": (b, p, cfg.d_mlp),
        "hook_embed": (b, p, cfg.d_model),
        "hook_pos_embed": (b, p, cfg.d_model),
    }


ALL_CHECKS = (
    check_logits_match,
    check_hooks_match_hf,
    check_residual_algebra,
    check_head_ablation,
    check_gradients,
    check_no_dead_hooks,
    check_no_leaks,
    check_misspelt_names,
    check_shapes,
)


def run_conformance(adapter: type[Adapter], architecture: str | None = None, path: AttnPath = "native") -> None:
    """Run every check on one architecture of an adapter (raises AssertionError on the first failure)."""
    for check in ALL_CHECKS:
        check(make_pair(adapter, architecture, path))


__all__ = ["ALL_CHECKS", "Pair", "build_tiny_model", "make_pair", "run_conformance"]
