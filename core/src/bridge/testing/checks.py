"""The conformance checks (what "correct" means for a bridged model), reusable by every plugin.

Each check takes a ``Pair``: a bridge loaded through ``bridge.load`` and an independent
HF reference model (same weights, eager attention) to compare with. ``path="hooked"``
runs the bridge with a no-op hook on every ``hook_pattern``, forcing the seam's eager path.
Every expected value comes from the reference (its outputs, its modules run on a patched value,
its autograd, weight surgery on a copy of it), never from the bridge. A failure is a
``ConformanceError`` saying what was compared and by how much (``compare.TOLERANCE``).
"""

from __future__ import annotations

import copy
import inspect
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import einops
import torch
from torch import nn

from bridge.kernel.components.attention import weight_in_out
from bridge.kernel.components.blocks import Block
from bridge.kernel.components.norm import Norm
from bridge.kernel.errors import HookNameError
from bridge.model import Bridge
from bridge.testing.algebra import check_attention_algebra, check_projections
from bridge.testing.compare import (
    CheckNotRun,
    NotApplicable,
    conformance_check,
    expect_close,
    fail,
    max_diff,
    not_applicable,
)
from bridge.testing.configuration import check_config
from bridge.testing.contract import check_implied_hooks, check_shapes, qk_norm_modules
from bridge.testing.examples import AdapterLike
from bridge.testing.fixtures import build_tiny_model, save_tiny_model
from bridge.testing.layers import attention_layers, attention_of, hf_path, layer_kind
from bridge.testing.pair import AttnPath, Pair, make_pair
from bridge.testing.properties import check_hook_subsets, check_input_shapes, check_left_padded_batches
from bridge.testing.sensitivity import check_every_hook_matters
from bridge.testing.training import check_train_mode


@conformance_check
def check_logits_match(pair: Pair) -> None:
    """Logits (hidden states for headless models) equal HF's with no hooks and with every hook cached."""
    tokens = pair.tokens()
    expected = pair.reference_output(tokens)
    with pair.on_path():
        plain = pair.output(tokens)
    expect_close(plain, expected, f"{pair.return_type} with no hooks vs the HF reference")
    with pair.on_path():
        cached, cache = pair.bridge.run_with_cache(tokens, return_type=pair.return_type)
    enabled = [n for n, h in pair.bridge.hook_dict.items() if h.enabled]
    missing = sorted(set(enabled) - set(cache))
    if missing:
        fail(f"run_with_cache cached {len(cache)} of {len(enabled)} enabled hook points; missing: {missing}")
    expect_close(cached, expected, f"{pair.return_type} with every hook cached vs the HF reference")


#: In ``Adapter.hidden_state_hooks``: HF's entry is the final norm applied to the last block's output.
LN_FINAL = "ln_final"


@conformance_check(paths=("native",))
def check_hooks_match_hf(pair: Pair) -> None:
    """HF's ``hidden_states`` equal the hooks the adapter maps them to (``Adapter.hidden_state_hooks``;
    ``"ln_final"``: the reference's own final norm on the last ``hook_resid_post``), and ``hook_pattern``
    equals HF eager ``attentions`` (per tower for composite models, from the adapter's ``tower_outputs``)."""
    tokens = pair.tokens()
    norms = _qk_norms(pair)
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for hook, path in norms.items():

        def record(_m: Any, _a: Any, out: Any, hook: str = hook) -> None:
            seen.setdefault(hook, out[0] if isinstance(out, tuple) else out)

        handles.append(pair.reference.get_submodule(path).register_forward_hook(record))
    try:
        ref = pair.run_reference(tokens, output_hidden_states=True, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    with pair.on_path():
        _, cache = pair.bridge.run_with_cache(tokens, return_type=None)
    for prefix, part in pair.parts():
        outputs, hooks = pair.example_set.reference_part(
            pair.bridge.adapter, prefix[:-1], len(part.blocks), pair.reference, tokens, ref
        )
        _check_part_hooks(pair, cache, prefix, part, outputs, hooks)
    for hook in norms:
        if hook not in cache:
            fail(f"{hook} is missing: the HF attention has its own norm at {norms[hook]}")
        if hook not in seen:
            raise CheckNotRun(f"the HF reference never called its norm {norms[hook]} (for {hook})")
        expected = seen[hook]
        got = _as_layout(cache[hook], expected)
        expect_close(got, expected, f"{hook} vs the output of HF's {norms[hook]}")


def _qk_norms(pair: Pair) -> dict[str, str]:
    """``{bridge hook: reference module path}`` for every attention's own query/key norm (``hook_q_normed``…)."""
    found = {}
    for prefix, part in pair.parts():
        for layer in attention_layers(part.blocks):
            attn = attention_of(part.blocks[layer])
            if getattr(attn, "hf_module", None) is None:
                continue
            child = _child_name(part.blocks[layer], attn)
            root = hf_path(pair.bridge, attn.hf_module)
            for which, path in qk_norm_modules(attn.hf_module, getattr(attn, "seam_module", None)).items():
                found[f"{prefix}blocks.{layer}.{child}.hook_{which}_normed"] = f"{root}.{path}" if root else path
    return found


def _as_layout(hook: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``[b, p, heads, d]`` hook value laid out as HF's tensor ``like``: the same, ``[b, heads, p, d]`` or
    ``[b, p, heads·d]``."""
    b, p, h, d = hook.shape
    if tuple(like.shape) == (b, h, p, d) and h != p:
        return hook.transpose(1, 2)
    if tuple(like.shape) == (b, p, h * d):
        return einops.rearrange(hook, "b p h d -> b p (h d)")
    return hook


def _block_output(part: Any, layer: int, name: str) -> str:
    """``name`` with a block's ``hook_resid_post`` replaced by the hook holding what that block hands on
    (``Block.output_hook``: ``hook_normalized_resid_post`` for post-norm blocks)."""
    suffix = f"blocks.{layer}.hook_resid_post"
    if name.endswith(suffix):
        return name[: -len("hook_resid_post")] + getattr(part.blocks[layer], "output_hook", "hook_resid_post")
    return name


def _check_part_hooks(pair: Pair, cache: Any, prefix: str, part: Any, ref: Any, hooks: tuple[str, ...]) -> None:
    n = len(part.blocks)
    hidden = getattr(ref, "hidden_states", None)
    if hidden is None:
        raise CheckNotRun(f"the HF reference returned no hidden_states for {prefix or 'the model'}")
    names = [
        _block_output(part, int(name.split(".")[1]), name) if name.startswith("blocks.") else name for name in hooks
    ]
    if len(names) != len(hidden):
        fail(f"{prefix}: HF returns {len(hidden)} hidden states, the adapter's hidden_state_hooks maps {len(names)}")
    for index, (name, expected) in enumerate(zip(names, hidden, strict=True)):
        if name == LN_FINAL and part.ln_final is None:  # a tower without a final norm: its last block's output
            last = _block_output(part, n - 1, f"{prefix}blocks.{n - 1}.hook_resid_post")
            got, what = cache[last], f"{last} vs HF hidden_states[{index}]"
        elif name == LN_FINAL:
            final = pair.reference.get_submodule(hf_path(pair.bridge, part.ln_final.hf))
            with torch.no_grad():
                got = final(cache[f"{prefix}blocks.{n - 1}.hook_resid_post"])
            what = f"HF's final norm on {prefix}blocks.{n - 1}.hook_resid_post vs HF hidden_states[{index}]"
        else:
            got, what = cache[f"{prefix}{name}"], f"{prefix}{name} vs HF hidden_states[{index}]"
        expect_close(got, expected, what)
    _check_part_patterns(cache, prefix, part, ref)
    crosses = [f"{prefix}blocks.{layer}.cross_attn.hook_pattern" for layer in range(n)]
    if any(name in cache for name in crosses) and getattr(ref, "cross_attentions", None) is None:
        raise CheckNotRun(f"the bridge has cross-attention patterns in {prefix} but HF returned no cross_attentions")
    for layer, name in enumerate(crosses):  # [b, h, q_dec, k_enc]
        if name in cache:
            expect_close(cache[name], ref.cross_attentions[layer], f"{name} vs HF cross_attentions[{layer}]")


def _check_part_patterns(cache: Any, prefix: str, part: Any, ref: Any) -> None:
    """Each attention layer's ``hook_pattern`` equals HF's eager ``attentions`` entry of that layer: HF's tuple has
    one entry per layer (``None`` for layers that do not attend) or one per attention layer, in order (hybrids)."""
    layers = attention_layers(part.blocks)
    names = {
        i: f"{prefix}blocks.{i}.{_child_name(part.blocks[i], attention_of(part.blocks[i]))}.hook_pattern"
        for i in layers
    }
    present = [i for i in layers if names[i] in cache]
    if not present:
        return
    attentions = getattr(ref, "attentions", None)
    if attentions is None:
        raise CheckNotRun(f"the bridge has {names[present[0]]} but the HF reference returned no attentions to compare")
    if len(attentions) == len(part.blocks):
        by_layer = {i: attentions[i] for i in present}
    elif len([a for a in attentions if a is not None]) == len(present):
        by_layer = dict(zip(present, [a for a in attentions if a is not None], strict=True))
    else:
        fail(
            f"{prefix or 'the model'}: HF returns {len(attentions)} attention patterns for {len(part.blocks)} layers, "
            f"the bridge has hook_pattern in {len(present)} layers ({present})"
        )
    for layer in present:
        if by_layer[layer] is None:
            fail(f"{names[layer]}: HF returns no attention pattern for layer {layer}, which the bridge says attends")
        expect_close(cache[names[layer]], by_layer[layer], f"{names[layer]} vs HF attentions (layer {layer})")


@conformance_check(paths=("native",))
def check_norms_match_hf(pair: Pair) -> None:
    """Every norm component's re-expressed forward (``hook_scale`` replaced by an equal copy) equals the HF
    reference's own norm module on small inputs (std 1e-3, where the norm's eps is a tenth of the variance or
    more, so a dropped or misplaced eps shows)."""
    generator = torch.Generator().manual_seed(2)
    norms = [(name, m) for name, m in pair.bridge.named_modules() if isinstance(m, Norm)]
    if not norms:
        not_applicable(f"{pair.bridge.cfg.architecture} has no norm components")
    for name, norm in norms:
        width = weight_in_out_width(norm.hf)
        x = 1e-3 * torch.randn(2, 5, width, generator=generator)
        reference = pair.reference.get_submodule(hf_path(pair.bridge, norm.hf))
        with torch.no_grad(), pair.bridge.hooks(fwd_hooks=[(norm.hook_scale.name, lambda t, hook: t.clone())]):
            got = norm.hf(x)
        with torch.no_grad():
            expected = reference(x)
        expect_close(got, expected, f"{name} re-expressed vs the HF reference's norm on inputs of std 1e-3")


def weight_in_out_width(norm: torch.nn.Module) -> int:
    """The width a norm module normalizes (its weight's length, else its ``normalized_shape``)."""
    weight = getattr(norm, "weight", None)
    if weight is not None:
        return weight.shape[-1]
    return int(norm.normalized_shape[-1])


def _reference_children(pair: Pair, block: Block) -> dict[str, torch.nn.Module]:
    """The reference model's modules standing where the bridge's block reads its HF submodules (and, for a layer
    scale that is a parameter of the HF block in ``sublayer_output_modules``, a module multiplying by the
    reference's parameter)."""
    root = hf_path(pair.bridge, block.hf)
    names = {id(m): name for name, m in block.hf.named_modules()}
    children: dict[str, torch.nn.Module] = {
        child: pair.reference.get_submodule(f"{root}.{names[id(module)]}" if names[id(module)] else root)
        for child, module in block.hf_modules.items()
    }
    reference_block = pair.reference.get_submodule(root)
    for name in (n for names in block.sublayer_output_modules.values() for n in names):
        if name not in children and isinstance(getattr(reference_block, name, None), torch.nn.Parameter):
            children[name] = _ParameterScale(getattr(reference_block, name))
    return children


class _ParameterScale(torch.nn.Module):
    """``x * scale``: a layer scale the HF block holds as a parameter (InternViT's ``lambda_1``)."""

    def __init__(self, scale: torch.nn.Parameter) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def _call_module(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; modules that add a residual they are given (BLOOM's, MPT's MLPs) get zeros for it."""
    params = [p for p in inspect.signature(module.forward).parameters.values() if p.default is p.empty]
    params = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    extra = [torch.zeros_like(x)] * (len(params) - 1)
    out = module(x, *extra)
    return out[0] if isinstance(out, tuple | list) else out


def _mlp_write(ref: dict[str, torch.nn.Module], block: Block, x: torch.Tensor) -> torch.Tensor:
    """What a block's MLP side writes to the stream for the stream value ``x``, run on the reference's modules
    ``ref``: the block's ``mlp_norm`` (``ln2`` in pre-norm blocks), the MLP (the sum of ``Block.mlp_children``),
    the modules the block applies to the MLP's output (``sublayer_output_modules``: ``ln2_post``, a layer scale)
    where present, times the block's ``residual_scale`` (Granite scales each sublayer's output before the
    residual sum)."""
    norm = block.mlp_norm
    h = _call_module(ref[norm], x) if norm is not None and norm in ref else x
    parts = [_call_module(ref[name], h).reshape(h.shape) for name in block.mlp_children if name in ref]
    out = sum(parts[1:], parts[0])  # an MoE may return [b·p, d] (Llama 4); several MLPs are summed (Granite-4)
    for name in block.sublayer_output_modules.get("mlp", ()):
        out = _call_module(ref[name], out) if name in ref else out
    return out * block.residual_scale


def _reference_mlp_out(pair: Pair, block: Block, x: torch.Tensor) -> torch.Tensor:
    """What the block's MLP writes for the stream value ``x``, from the reference's own modules."""
    with torch.no_grad():
        return _mlp_write(_reference_children(pair, block), block, x)


def _patch_noise(seed: int) -> Any:
    generator = torch.Generator().manual_seed(seed)

    def patch(t: torch.Tensor, hook: Any) -> torch.Tensor:
        return t + torch.randn(t.shape, generator=generator).to(t.dtype)

    return patch


def _algebra_names(pair: Pair) -> list[tuple[str, Any, int, Block]]:
    """``(block name, part, layer, block)`` for every block of every part; each must declare its algebra."""
    found = []
    for prefix, part in pair.parts():
        for layer, block in enumerate(part.blocks):
            name = f"{prefix}blocks.{layer}"
            if not getattr(block, "algebra", None):
                fail(f"{name} ({type(block).__name__}) declares no residual algebra")
            found.append((name, part, layer, block))
    return found


def _check_identities(pair: Pair, cache: Any, patched: set[str], when: str) -> None:
    """Every identity of every block's ``algebra`` whose sum was not patched holds in ``cache``, and each block's
    ``hook_resid_pre`` is the previous block's output unless the examples' ``stream_injections`` name it
    (DeepStack adds image features there)."""
    injected = set(pair.example_set.stream_injections(pair.bridge.hf_model.config))
    for name, part, layer, block in _algebra_names(pair):
        for total, terms in block.algebra:
            if f"{name}.{total}" in patched:
                continue  # a patched sum is no longer its terms' sum; what reads it is checked separately
            got = cache[f"{name}.{total}"]
            for term in terms:
                if tuple(cache[f"{name}.{term}"].shape) != tuple(got.shape):
                    fail(
                        f"{name}: {term} has shape {tuple(cache[f'{name}.{term}'].shape)} but {total} has "
                        f"{tuple(got.shape)}; the wiring declares {total} = {' + '.join(terms)}, a sum in the "
                        "residual stream (is the hook on the sublayer's output, after its output projection?)"
                    )
            expected = sum(cache[f"{name}.{t}"] for t in terms)
            expect_close(got, expected, f"{name}: {total} vs {' + '.join(terms)} ({when})")
        if layer and f"{name}.hook_resid_pre" not in injected:
            prefix = name[: -len(f"blocks.{layer}")]
            pre = f"{name}.hook_resid_pre"
            post = _block_output(part, layer - 1, f"{prefix}blocks.{layer - 1}.hook_resid_post")
            expect_close(cache[pre], cache[post], f"{pre} vs {post} ({when})", tolerance=0.0)


@conformance_check(paths=("native",))
def check_residual_algebra(pair: Pair) -> None:
    """Each block's residual identities (``Block.algebra``, e.g. ``resid_mid = resid_pre + attn_out``,
    ``resid_post = resid_mid + mlp_out``) hold in every block: unpatched; with every term that is no identity's
    sum (``hook_attn_out``, ``hook_mlp_out``, ``mixer.hook_ssm_out``…) patched; and with every ``hook_resid_mid``
    patched, when also ``hook_mlp_out`` equals the HF reference's own norm and MLP run on the patched value (the
    patch reaches the MLP)."""
    tokens = pair.tokens()
    blocks = _algebra_names(pair)
    with pair.on_path():
        _, clean = pair.bridge.run_with_cache(tokens, return_type=None)
    _check_identities(pair, clean, set(), "unpatched")

    terms = []
    for name, _, _, block in blocks:
        totals = {total for total, _ in block.algebra}
        terms += [f"{name}.{t}" for _, ts in block.algebra for t in ts if t not in totals and t != "hook_resid_pre"]
    terms = list(dict.fromkeys(terms))
    with pair.on_path(), pair.bridge.hooks(fwd_hooks=[(t, _patch_noise(1)) for t in terms]):
        _, cache = pair.bridge.run_with_cache(tokens, return_type=None)
    _check_identities(pair, cache, set(), "every sublayer output patched")

    inputs = {block.mlp_input_hook for *_, block in blocks}
    mids = [n for n in pair.bridge.hook_dict if n.endswith(("hook_resid_mid", *inputs))]
    if not mids:
        return
    with pair.on_path(), pair.bridge.hooks(fwd_hooks=[(name, _patch_noise(2)) for name in mids]):
        _, cache = pair.bridge.run_with_cache(tokens, return_type=None)
    _check_identities(pair, cache, set(mids), "every hook_resid_mid patched")
    reached = 0
    for name, _, _, block in blocks:
        mlp_in = f"{name}.{block.mlp_input_hook}"
        if mlp_in in cache and f"{name}.hook_mlp_out" in cache and "mlp" in block.hf_modules:
            expected = _reference_mlp_out(pair, block, cache[mlp_in])
            what = f"{name}.hook_mlp_out vs HF's MLP on patched {block.mlp_input_hook}"
            expect_close(cache[f"{name}.hook_mlp_out"], expected, what)
            reached += 1
    runnable = any("mlp" in block.hf_modules for *_, block in blocks)
    if not reached and runnable:  # an MLP the wiring computes inline has no HF module to run alone
        raise CheckNotRun(f"the model has {mids[0]} but no block MLP the reference could be run on")


def _ablation_layers(pair: Pair) -> list[tuple[str, Any, int]]:
    """``(prefix, part, layer)`` of the first attention layer (with ``hook_z`` and an output projection) of each
    attention kind in each part."""
    found = []
    for prefix, part in pair.parts():
        layers = [i for i in attention_layers(part.blocks) if getattr(attention_of(part.blocks[i]), "out_proj", None)]
        kinds = {layer_kind(part.blocks[i]): i for i in reversed(layers)}
        found += [(prefix, part, layer) for layer in sorted(kinds.values())]
    return found


@conformance_check
def check_head_ablation(pair: Pair, layer: int | None = None, head: int = 1) -> None:
    """Zeroing head ``head`` at ``hook_z`` equals zeroing its rows of the HF output projection, in the first
    attention layer of each kind of each part (``layer``: that block of the first part only). Where that
    projection's weight is shared with other layers (Zamba2's shared block), its input rows are zeroed at that
    layer's module only (a forward pre-hook), since the hook ablates that layer only."""
    tokens = pair.tokens()
    if layer is not None:
        prefix, part = pair.parts()[0]
        targets = [(prefix, part, layer)] if attention_of(part.blocks[layer]) is not None else []
    else:
        targets = _ablation_layers(pair)
    if not targets:
        not_applicable(f"{pair.bridge.cfg.architecture} has no attention with an output projection")
        return
    baseline = pair.reference_output(tokens)
    for prefix, part, index in targets:
        attn = attention_of(part.blocks[index])
        if getattr(attn, "out_proj", None) is None or not hasattr(attn, "hook_z"):
            fail(f"{prefix}blocks.{index}.attn has no output projection or hook_z to ablate a head at")
        name = f"{prefix}blocks.{index}.{_child_name(part.blocks[index], attn)}.hook_z"

        def ablate(z: torch.Tensor, hook: Any) -> torch.Tensor:
            z = z.clone()
            z[:, :, head] = 0.0
            return z

        with pair.on_path():
            got = pair.bridge.run_with_hooks(tokens, fwd_hooks=[(name, ablate)], return_type=pair.return_type)
        surgery = copy.deepcopy(pair.reference)
        out_proj = surgery.get_submodule(hf_path(pair.bridge, attn.out_proj))
        d = weight_in_out(out_proj).shape[0] // attn.n_heads  # z's head size (MLA: d_head_v)
        shared = sum(getattr(m, "weight", None) is out_proj.weight for m in surgery.modules()) > 1
        if shared:  # weights reused at other depths (Zamba2): zero the head's input at this depth's module only
            handle = out_proj.register_forward_pre_hook(_zero_head_input(head, d))
        else:
            with torch.no_grad():
                weight_in_out(out_proj)[head * d : (head + 1) * d] = 0.0
        expected = pair.reference_output(tokens, model=surgery)
        if shared:
            handle.remove()
        what = f"{name} head {head} zeroed vs its out_proj rows zeroed in the HF reference"
        expect_close(got, expected, what)
        if not max_diff(expected, baseline, what) > 1e-3:
            raise CheckNotRun(f"zeroing head {head} of {name} barely moves the reference's output")


def _zero_head_input(head: int, d: int) -> Any:
    """A forward pre-hook zeroing head ``head``'s ``d`` input features of an output projection."""

    def zero(_module: nn.Module, args: tuple) -> tuple:
        z = args[0].clone()
        z[..., head * d : (head + 1) * d] = 0.0
        return (z, *args[1:])

    return zero


def _child_name(block: nn.Module, child: nn.Module) -> str:
    return next(name for name, m in block.named_children() if m is child)


def _gradient_names(pair: Pair) -> list[str]:
    """Where ``check_gradients`` compares: every block's output hook, every attention's ``hook_z`` (with an
    output projection) and every ``hook_resid_mid`` of a block whose MLP is an HF module."""
    wanted = []
    for prefix, part in pair.parts():
        for layer, block in enumerate(part.blocks):
            name = f"{prefix}blocks.{layer}"
            wanted.append(_block_output(part, layer, f"{name}.hook_resid_post"))
            attn = attention_of(block)
            feeds = getattr(attn, "z_feeds_out_proj", True)  # a gated attention changes z before its projection
            if attn is not None and getattr(attn, "out_proj", None) is not None and feeds:
                z = f"{name}.{_child_name(block, attn)}.hook_z"
                if z in pair.bridge.hook_dict:
                    wanted.append(z)
            pre_norm = block.mlp_input_hook == "hook_resid_mid" and block.mlp_norm == "ln2"
            if f"{name}.hook_resid_mid" in pair.bridge.hook_dict and "mlp" in block.hf_modules and pre_norm:
                wanted.append(f"{name}.hook_resid_mid")  # post = mid + mlp(ln2(mid)): the gradient assumes it
    return wanted


@conformance_check
def check_gradients(pair: Pair) -> None:
    """Backward hooks, and ``run_with_cache(incl_bwd=True)`` for language models, receive d(output)/d(activation)
    at every block's ``hook_resid_post``, every ``attn.hook_z`` and every ``hook_resid_mid`` (all in one backward
    pass, so every block's wiring is in use), equal to the gradient the HF reference's own autograd gives at the
    same place (its block outputs, its output projections' inputs, and for ``resid_mid`` the block output's
    gradient plus its pull-back through the reference's norm and MLP)."""
    tokens = pair.tokens(batch=1)
    wanted = _gradient_names(pair)
    expected = _reference_gradients(pair, tokens, wanted)
    return_type = pair.scalar_return_type
    labels = pair.scalar_labels(tokens)
    scored = {} if labels is None else {"labels": labels}
    grads: dict[str, torch.Tensor] = {}

    def keep(g: torch.Tensor, hook: Any) -> None:
        grads[hook.name] = g

    with pair.on_path():
        out = pair.bridge.run_with_hooks(
            tokens, bwd_hooks=[(name, keep) for name in wanted], return_type=return_type, **scored
        )
        _scalar(out).backward()
    pair.bridge.hf_model.zero_grad(set_to_none=True)
    for hook_name in wanted:
        if hook_name not in grads:
            fail(f"the backward hook on {hook_name} never fired")
        expect_close(grads[hook_name], expected[hook_name], f"backward hook gradient at {hook_name} vs HF's autograd")
    if return_type == "loss":
        with pair.on_path():
            _, cache = pair.bridge.run_with_cache(
                tokens, return_type="loss", incl_bwd=True, names_filter=wanted, **scored
            )
        pair.bridge.hf_model.zero_grad(set_to_none=True)
        for hook_name in wanted:
            what = f"run_with_cache(incl_bwd=True)[{hook_name}_grad] vs the HF reference's autograd"
            expect_close(cache[f"{hook_name}_grad"], expected[hook_name], what)


def _scalar(out: torch.Tensor) -> torch.Tensor:
    return out if out.ndim == 0 else out.sum()


def _reference_scalar(pair: Pair, tokens: Any) -> torch.Tensor:
    """What the bridge differentiates, computed by the reference: HF's own loss for language models (against
    ``Pair.scalar_labels`` for heads scored against labels)."""
    if pair.scalar_return_type == "loss":
        labels = pair.scalar_labels(tokens)
        if labels is None:
            labels = tokens["input_ids"] if isinstance(tokens, Mapping) else tokens
        return pair.run_reference(tokens, labels=labels).loss
    return _scalar(pair.reference_output(tokens))


def _block_of(pair: Pair, name: str) -> tuple[Any, int, Block]:
    prefix, _, rest = name.partition("blocks.")
    layer = int(rest.split(".")[0])
    part = dict(pair.parts())[prefix]
    return part, layer, part.blocks[layer]


def _reference_gradients(pair: Pair, tokens: Any, names: list[str]) -> dict[str, torch.Tensor]:
    """d(scalar)/d(activation) from the reference's autograd, all in one forward and one backward pass: the
    reference's block outputs and output-projection inputs are captured as they are computed (still in the graph),
    and each ``resid_mid`` is the block output's gradient plus its pull-back through the reference's MLP (or, where
    the block's output is not ``resid_mid`` plus a write, the gradient at the reference's ``ln2`` input itself)."""
    reference = pair.reference
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def output_of(key: str) -> Any:
        def capture(_module: torch.nn.Module, _args: Any, out: Any) -> None:
            captured[key] = out[0] if isinstance(out, tuple | list) else out

        return capture

    def input_of(key: str) -> Any:
        def capture(_module: torch.nn.Module, args: tuple) -> None:
            captured[key] = args[0]

        return capture

    mids: dict[str, tuple[Block, str]] = {}
    try:
        for name in names:
            _, _, block = _block_of(pair, name)
            if name.endswith("hook_resid_mid"):
                post = f"{name.removesuffix('hook_resid_mid')}post"
                mids[name] = (block, post)
                if post not in captured:
                    ref_block = reference.get_submodule(hf_path(pair.bridge, block.hf))
                    handles.append(ref_block.register_forward_hook(output_of(post)))
                children = _reference_children(pair, block)
                handles.append(children.get("ln2", children["mlp"]).register_forward_pre_hook(input_of(name)))
            elif name.endswith("hook_z"):
                out_proj = reference.get_submodule(hf_path(pair.bridge, attention_of(block).out_proj))
                handles.append(out_proj.register_forward_pre_hook(input_of(name)))
            else:
                ref_block = reference.get_submodule(hf_path(pair.bridge, block.hf))
                key = f"{name.rsplit('.', 1)[0]}.post"
                handles.append(ref_block.register_forward_hook(output_of(key)))
        scalar = _reference_scalar(pair, tokens)
    finally:
        for handle in handles:
            handle.remove()
    # where resid_post is not resid_mid plus the MLP's write (MiniMax carries a scaled norm of resid_mid on), the
    # gradient at resid_mid is taken at HF's own ln2 input, the same tensor
    direct = {
        name for name, (block, _) in mids.items() if "hook_resid_mid" not in dict(block.algebra)["hook_resid_post"]
    }
    keys = [k for k in dict.fromkeys(captured) if not k.endswith("hook_resid_mid") or k in direct]
    missing = [k for k in keys if not captured[k].requires_grad]
    if missing:
        raise CheckNotRun(f"the HF reference's activations at {missing} are not part of its autograd graph")
    grads = dict(zip(keys, torch.autograd.grad(scalar, [captured[k] for k in keys]), strict=True))
    expected: dict[str, torch.Tensor] = {}
    for name in names:
        _, _, block = _block_of(pair, name)
        if name in direct:
            expected[name] = grads[name]
        elif name.endswith("hook_resid_mid"):
            post = grads[mids[name][1]]
            mid = captured[name].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                out = _mlp_write(_reference_children(pair, block), block, mid)
                (through_mlp,) = torch.autograd.grad(out, mid, post)
            expected[name] = post + through_mlp
        elif name.endswith("hook_z"):
            heads = attention_of(block).n_heads
            expected[name] = einops.rearrange(grads[name], "b p (h d) -> b p h d", h=heads)
        else:
            expected[name] = grads[f"{name.rsplit('.', 1)[0]}.post"]
    reference.zero_grad(set_to_none=True)
    return expected


@conformance_check(paths=("native",))
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
    silent = sorted(set(model.hook_dict) - fired)
    if silent:
        fail(f"hook points that never fired on a forward pass with every hook in use: {silent}")


def _attachments(model: Bridge, hf_own: Mapping[str, tuple[int, int]] | None = None) -> list[str]:
    """HF modules that currently carry a bridge override or torch hook. ``hf_own``: the torch hooks HF itself
    keeps on modules (``(forward hooks, pre-hooks)`` per module, e.g. the hooks a vision-language model's
    ``output_hidden_states`` capture installs for good on its image tower), which are not counted."""
    hf_own = hf_own or {}
    return [
        name
        for name, m in model.hf_model.named_modules()
        if "forward" in m.__dict__ or (len(m._forward_hooks), len(m._forward_pre_hooks)) > hf_own.get(name, (0, 0))
    ]


def _torch_hooks(model: Bridge) -> dict[str, tuple[int, int]]:
    return {
        name: (len(m._forward_hooks), len(m._forward_pre_hooks))
        for name, m in model.hf_model.named_modules()
        if m._forward_hooks or m._forward_pre_hooks
    }


@conformance_check
def check_no_leaks(pair: Pair) -> None:
    """After ``run_with_hooks``, ``hooks()`` exit or a raising hook, only the user's own hooks remain."""
    model = pair.bridge
    tokens = pair.tokens()
    if _attachments(model):
        fail(f"HF modules altered with no hooks in use: {_attachments(model)}")
    model(tokens, return_type=None)
    hf_own = _torch_hooks(model)  # what HF's own forward left registered (no bridge hook is in use)
    prefix, part = pair.parts()[0]
    sublayer_out = f"{prefix}blocks.0.{part.blocks[0].algebra[-1][1][-1]}"  # hook_mlp_out, mixer.hook_ssm_out...
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
            fail("a hook's exception did not propagate out of run_with_hooks")
        model.run_with_cache(tokens, return_type=None)
        with model.hooks(fwd_hooks=[(lambda n: True, lambda t, hook: None)]):
            model(tokens, return_type=None)
    after = {n: (list(h.fwd_hooks), list(h.bwd_hooks)) for n, h in model.hook_dict.items()}
    changed = sorted(n for n in after if after[n] != before[n])
    if changed:
        fail(f"hooks of finished calls were left attached, or the user's hooks were removed, at: {changed}")
    model.reset_hooks()
    if model.hook_dict[resid_pre].fwd_hooks != permanent:
        fail(f"reset_hooks() removed the permanent hook on {resid_pre}")
    if temporary[0] in model.hook_dict[sublayer_out].fwd_hooks:
        fail(f"reset_hooks() left the temporary hook on {sublayer_out}")
    model.reset_hooks(including_permanent=True)
    if _attachments(model, hf_own):
        fail(f"HF modules still altered after all hooks went: {_attachments(model, hf_own)}")


def _inner_hook(model: Bridge, prefix: str = "") -> str:
    """A hook point inside block 0's sublayers: ``attn.hook_pattern`` if there is one, else the last one."""
    if f"{prefix}blocks.0.attn.hook_pattern" in model.hook_dict:
        return f"{prefix}blocks.0.attn.hook_pattern"
    depth = prefix.count(".") + 3
    inner = [n for n, h in model.hook_dict.items() if n.startswith(f"{prefix}blocks.0.") and n.count(".") == depth]
    return [n for n in inner if model.hook_dict[n].enabled][-1]


@conformance_check(paths=("native",))
def check_misspelt_names(pair: Pair) -> None:
    """Misspelt hook names (last two letters swapped) raise with the close matches."""
    prefix, part = pair.parts()[-1]
    last = f"{prefix}blocks.{len(part.blocks) - 1}.hook_resid_post"
    for right in (_inner_hook(pair.bridge, prefix), last):
        wrong = right[:-2] + right[-1] + right[-2]
        try:
            pair.bridge.add_hook(wrong, lambda t, hook: None)
        except HookNameError as err:
            if right not in str(err):
                fail(f"the error for the misspelt {wrong!r} does not suggest {right!r}: {err}")
        else:
            fail(f"the misspelt hook name {wrong!r} was accepted")


@conformance_check
def check_loss_masking(pair: Pair) -> None:
    """With right padding and an attention mask, ``return_type="loss"`` equals HF's own loss with the padded
    targets labelled -100 (only next tokens that are real count); per-token losses are 0 after padding."""
    if pair.bridge.adapter.loss_kind == "labels" and pair.has_head:
        _check_labelled_loss(pair)
        return
    if pair.scalar_return_type != "loss":
        not_applicable(f"{pair.bridge.cfg.architecture} is not a language model with a loss")
        return
    inputs = pair.tokens(batch=2, pos=9)
    tokens = inputs["input_ids"] if isinstance(inputs, Mapping) else inputs  # a dict: a vision-language model's
    mask = torch.ones_like(tokens)
    mask[0, -4:] = 0  # sequence 0: real tokens, then 4 padding positions
    masked = {**inputs, "attention_mask": mask} if isinstance(inputs, Mapping) else None
    with pair.on_path():
        if masked is None:
            got = pair.bridge(tokens, return_type="loss", attention_mask=mask)
            per_token = pair.bridge(tokens, return_type="loss", attention_mask=mask, loss_per_token=True)
        else:
            got = pair.bridge(masked, return_type="loss")
            per_token = pair.bridge(masked, return_type="loss", loss_per_token=True)
    labels = tokens.masked_fill(mask == 0, -100)
    if masked is None:
        expected = pair.run_reference(tokens, attention_mask=mask, labels=labels).loss
    else:
        expected = pair.run_reference(masked, labels=labels).loss
    expect_close(got, expected, "masked loss vs HF's loss with padded targets labelled -100")
    after = per_token[0, -4:]  # the predictions of the 4 padded targets
    expect_close(after, torch.zeros_like(after), "per-token loss of targets after padding")


def _check_labelled_loss(pair: Pair) -> None:
    """For heads scored against labels (masked LMs, sequence-to-sequence models, classifiers): with padding (the
    first sequence's last 3 input positions) and labels of which every third is -100, ``return_type="loss"``
    equals HF's own loss for the same labels, and per-token losses are 0 where the label is -100. (A model whose
    encoder reads audio features, Whisper, gets no padding mask.)"""
    inputs = pair.tokens(batch=2, pos=9)
    mapping = dict(inputs) if isinstance(inputs, Mapping) else {"input_ids": inputs}
    mask = None
    if "input_ids" in mapping:
        mask = torch.ones_like(mapping["input_ids"])
        mask[0, -3:] = 0
        mapping["attention_mask"] = mask
    logits = pair.reference_output(mapping)
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, logits.shape[-1], logits.shape[:-1], generator=generator)
    if labels.ndim == 2:  # token labels: every third not scored, nor the padded positions of a masked LM
        labels[:, ::3] = -100
        if mask is not None and labels.shape == mask.shape:
            labels = labels.masked_fill(mask == 0, -100)
    else:
        labels[0] = -100
    with pair.on_path():
        got = pair.bridge(mapping, return_type="loss", labels=labels)
        per_token = pair.bridge(mapping, return_type="loss", labels=labels, loss_per_token=True)
    expected = pair.run_reference(mapping, labels=labels).loss
    expect_close(got, expected, "loss against labels (every third -100, padded input) vs HF's loss")
    ignored = per_token[labels == -100]
    expect_close(ignored, torch.zeros_like(ignored), "per-token loss where the label is -100")


ALL_CHECKS = (
    check_logits_match,
    check_hooks_match_hf,
    check_implied_hooks,
    check_shapes,
    check_config,
    check_every_hook_matters,
    check_residual_algebra,
    check_norms_match_hf,
    check_attention_algebra,
    check_projections,
    check_head_ablation,
    check_gradients,
    check_loss_masking,
    check_train_mode,
    check_left_padded_batches,
    check_hook_subsets,
    check_input_shapes,
    check_no_dead_hooks,
    check_no_leaks,
    check_misspelt_names,
)


def run_conformance(
    adapter: AdapterLike, architecture: str | None = None, path: AttnPath = "native", config: Any = None
) -> list[str]:
    """Run every check on one architecture of an adapter (or on the HF ``config`` given); raises
    ``ConformanceError`` on the first failure, and also when a check could not run (``CheckNotRun``).
    Returns the names of the checks that do not apply to this architecture (no attention, no loss…)."""
    skipped: list[str] = []
    directory = None
    if config is not None:
        directory = Path(tempfile.mkdtemp(prefix="bridge-conformance-"))
        save_tiny_model(config, directory)
    for check in ALL_CHECKS:
        try:
            check(make_pair(adapter, architecture, path, directory=directory))
        except NotApplicable:
            skipped.append(check.__name__)
    return skipped


__all__ = ["ALL_CHECKS", "LN_FINAL", "Pair", "build_tiny_model", "make_pair", "run_conformance"]
