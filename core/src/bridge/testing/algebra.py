"""What the hooks must satisfy among themselves and with the weight views: checks that see swapped projections.

Comparing outputs with HF catches a wrong computation, not a hook on the wrong tensor: an adapter whose ``hook_q``
holds the keys, or whose ``hook_pre`` holds an MLP's up projection, gives HF's logits on both paths. Here each
attention layer's hooks are recomputed from one another (rotary from the pre-rotary query, scores from the
queries and keys, the pattern from the scores, ``z`` from the pattern and values), each MLP's from its
projections (``post = act(pre) * pre_linear``), and every projection hook from the layer's input and its weight
views (``hook_q = x @ W_Q + b_Q``), so a hook that holds another tensor than its name says fails.
"""

from __future__ import annotations

from typing import Any

import einops
import torch
from transformers.activations import ACT2FN

from bridge.kernel.components.attention import FusedQKV, SplitQKV
from bridge.kernel.components.weight_views import MLPWeights, WeightViewError
from bridge.testing.compare import TOLERANCE, conformance_check, expect_close, fail, not_applicable, rounding_bound
from bridge.testing.layers import attention_layers, attention_of, components
from bridge.testing.pair import Pair

#: Relative change below which a feature counts as not rotated (float32 round-off of ``x cos + y sin`` is ~1e-7
#: of the magnitude; the slowest rotary frequency of the kit's tiny models moves a feature by 1e-5 or more of it).
UNROTATED = 2e-6


def rotation(rot: torch.Tensor, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How ``rot`` ``[b, p, h, d]`` (after rotary) relates to ``pre`` (what rotary rotated): the per-vector factor
    ``c = |rot| / |pre|`` (a rotation keeps norms; a norm or temperature after it scales whole vectors), the deviation
    ``|rot - c·pre|`` per feature relative to the feature's magnitude ``[d]``, and the largest deviation at position 0,
    where rotary is the identity up to an order of the features (DeepSeek-V3 interleaves its rotary features), so the
    vectors' sorted values are compared there; all float64."""
    rot, pre = rot.double(), pre.double()
    factor = rot.norm(dim=-1, keepdim=True) / pre.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    deviation = (rot - factor * pre).abs()
    scale = pre.abs().amax(dim=(0, 1, 2)).clamp_min(1e-30)
    per_feature = deviation.amax(dim=(0, 1, 2)) / scale  # [d]
    at_zero = (rot[:, 0].sort(dim=-1).values - factor[:, 0] * pre[:, 0].sort(dim=-1).values).abs()
    first = (at_zero / (factor[:, 0] * pre[:, 0].abs()).amax().clamp_min(1e-30)).amax()
    return factor, per_feature, first


def rotated_features(cache: Any, base: str, attn: Any = None) -> int | None:
    """How many features per head rotary moves in the attention ``base`` (``blocks.0.attn.``, the component
    ``attn``), from its hooks; ``None`` where it has no ``hook_rot_q``."""
    if f"{base}hook_rot_q" not in cache:
        return None
    _, per_feature, _ = rotation(cache[f"{base}hook_rot_q"], _pre_rotary(cache, base, "q", attn))
    return int((per_feature > UNROTATED).sum())


def _pre_rotary_name(cache: Any, base: str, which: str, attn: Any = None) -> str:
    """The hook holding what rotary rotates: the q/k norm's output where there is one before rotary, else the
    projection (an attention whose norms come after rotary, HunYuan's, says so with ``qk_norms_after_rotary``)."""
    normed = f"{base}hook_{which}_normed"
    before = normed in cache and not getattr(attn, "qk_norms_after_rotary", False)
    return normed if before else f"{base}hook_{which}"


def _pre_rotary(cache: Any, base: str, which: str, attn: Any = None) -> torch.Tensor:
    return cache[_pre_rotary_name(cache, base, which, attn)]


def _expand_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[b, p, g, d]`` → ``[b, p, heads, d]``: each key/value head repeated for the query heads that read it."""
    return x.repeat_interleave(heads // x.shape[2], dim=2)


def _check_rotary(cache: Any, base: str, attn: Any = None) -> None:
    for which in ("q", "k"):
        name = _pre_rotary_name(cache, base, which, attn)
        rot, pre = cache[f"{base}hook_rot_{which}"], cache[name]
        what = f"{base}hook_rot_{which} vs {name}"
        if tuple(rot.shape) != tuple(pre.shape):
            fail(f"{what}: shapes {tuple(rot.shape)} and {tuple(pre.shape)}; rotary keeps a head's shape")
        _, _, first = rotation(rot, pre)
        if not first <= UNROTATED * 10:
            fail(
                f"{what}: at position 0, where rotary is the identity (up to the order of the features), the rotated "
                f"vectors are not the pre-rotary ones (relative deviation {first:.3g}): the pre-rotary hook holds "
                "another tensor (keys for queries?)"
            )


def _score_inputs(cache: Any, base: str, attn: Any = None) -> tuple[str, str]:
    """The hooks holding the queries and keys the scores are made of."""
    if getattr(attn, "qk_norms_after_rotary", False):
        return f"{base}hook_q_normed", f"{base}hook_k_normed"
    if f"{base}hook_rot_q" in cache:
        return f"{base}hook_rot_q", f"{base}hook_rot_k"
    return f"{base}hook_q", f"{base}hook_k"


def _scores_from_hooks(cache: Any, base: str, heads: int, attn: Any = None) -> torch.Tensor:
    """``q · kᵀ`` per head ``[b, h, q, k]`` (float64) from the rotated (else projected) queries and keys, or the
    q/k norms' outputs where those come after rotary (``qk_norms_after_rotary``)."""
    q_name, k_name = _score_inputs(cache, base, attn)
    q, k = cache[q_name].double(), cache[k_name].double()
    if q.shape[-1] != k.shape[-1]:
        fail(f"{base}: queries have {q.shape[-1]} features per head, keys {k.shape[-1]}; their product is the scores")
    return einops.einsum(q, _expand_heads(k, heads), "b q h d, b k h d -> b h q k")


def _check_scores(pair: Pair, cache: Any, base: str, attn: Any, alibi: bool) -> None:
    """``scores = s · q·kᵀ`` (+ a bias that depends on positions only, for ALiBi; + ``hook_position_bias``, T5's)
    on every unmasked entry, with the
    attention module's ``scaling`` where it has one; soft-capped scores are compared after undoing the cap."""
    scores = cache[f"{base}hook_attn_scores"].double()
    heads = scores.shape[1]
    qk = _scores_from_hooks(cache, base, heads, attn)
    valid = scores > torch.finfo(cache[f"{base}hook_attn_scores"].dtype).min / 2
    cap = getattr(getattr(attn.hf_module, "config", None), "attn_logit_softcapping", None)
    wanted = getattr(attn.hf_module, "scaling", None)
    wanted = float(wanted) if isinstance(wanted, float | int) else None
    reduction = cache[f"{base}hook_attn_scores"].shape[-1] + qk.shape[-1]
    bound = TOLERANCE + rounding_bound(float(scores[valid].abs().max()) + 1.0, reduction)
    q_name, k_name = (n.removeprefix(base) for n in _score_inputs(cache, base, attn))
    if cap and wanted is not None:  # soft-capped: compare tanh(s q·k / cap) · cap, HF's own formula
        expected = torch.where(valid, torch.tanh(wanted * qk / cap) * cap, scores)
        what = f"{base}hook_attn_scores vs tanh({wanted:.4g} × {q_name} · {k_name} / {cap:g}) × {cap:g}"
        expect_close(scores, expected, what + " (unmasked entries)", tolerance=bound)
        return
    if cap:
        scores = torch.where(valid, torch.atanh((scores / cap).clamp(-1 + 1e-12, 1 - 1e-12)) * cap, scores)
    if f"{base}hook_position_bias" in cache:  # T5's relative position bias is added to q·kᵀ: take it off
        scores = torch.where(valid, scores - cache[f"{base}hook_position_bias"].double(), scores)
    if alibi:  # the bias is the same for every sequence: compare differences between the batch's sequences
        scores, qk, valid = scores[:1] - scores[1:], qk[:1] - qk[1:], valid[:1] & valid[1:]
    s_vals, qk_vals = scores[valid], qk[valid]
    scale = float((s_vals * qk_vals).sum() / (qk_vals * qk_vals).sum().clamp_min(1e-30))
    expected = torch.where(valid, scale * qk, scores)
    what = f"{base}hook_attn_scores vs {scale:.4g} × {q_name} · {k_name} (unmasked entries" + (
        ", differences between sequences: ALiBi's bias cancels)" if alibi else ")"
    )
    expect_close(scores, expected, what, tolerance=bound)
    if wanted is not None and not abs(scale - wanted) <= 1e-4 * abs(wanted):
        fail(f"{base}hook_attn_scores are {scale:.6g} × q·kᵀ, but the HF attention module's scaling is {wanted:.6g}")


def _check_pattern(cache: Any, base: str) -> None:
    """``pattern ∝ softmax(scores)`` in each row (a row sums to less than 1 where attention sinks take a share)."""
    scores, pattern = cache[f"{base}hook_attn_scores"].double(), cache[f"{base}hook_pattern"].double()
    shares = pattern / pattern.sum(-1, keepdim=True).clamp_min(1e-30)
    expect_close(shares, scores.softmax(-1), f"{base}hook_pattern (rows normalized) vs softmax(hook_attn_scores)")


def _check_z(cache: Any, base: str) -> None:
    """``z[b, p, h] = Σ_k pattern[b, h, p, k] · v[b, k, g(h)]``."""
    v, pattern = cache[f"{base}hook_v"].double(), cache[f"{base}hook_pattern"].double()  # [b, k, g, d], [b, h, q, k]
    expected = einops.einsum(pattern, _expand_heads(v, pattern.shape[1]), "b h q k, b k h d -> b q h d")
    expect_close(cache[f"{base}hook_z"], expected, f"{base}hook_z vs hook_pattern @ hook_v")


@conformance_check(paths=("native",))
def check_attention_algebra(pair: Pair) -> None:
    """In every attention layer, from its hooks alone: ``hook_rot_q/k`` are rotations of what rotary rotates
    (``hook_q/k``, or ``hook_q/k_normed`` where there are q/k norms): equal at position 0 up to one factor per vector;
    ``hook_attn_scores = s · rot_q · rot_kᵀ`` on every unmasked entry (``hook_q/k`` without rotary; plus a
    position-only bias with ALiBi; soft-capping undone), with ``s`` the HF module's ``scaling``; ``hook_pattern`` is
    the softmax of the scores (rows normalized: sinks take a share); ``hook_z = pattern @ hook_v``. So a hook on the
    wrong projection (``hook_q`` holding keys) fails even when every output matches HF."""
    with pair.on_path():
        _, cache = pair.bridge.run_with_cache(pair.tokens(), return_type=None)
    checked = 0
    alibi = pair.bridge.cfg.positional_embedding_type == "alibi"
    for prefix, part in pair.parts():
        for layer in attention_layers(part.blocks):
            block = part.blocks[layer]
            attn = attention_of(block)
            child = next(name for name, m in block.named_children() if m is attn)
            base = f"{prefix}blocks.{layer}.{child}."
            if f"{base}hook_rot_q" in cache:
                _check_rotary(cache, base, attn)
            if all(f"{base}hook_{n}" in cache for n in ("q", "k", "attn_scores")):
                _check_scores(pair, cache, base, attn, alibi and part is pair.bridge)
            if f"{base}hook_attn_scores" in cache and f"{base}hook_pattern" in cache:
                _check_pattern(cache, base)
            if all(f"{base}hook_{n}" in cache for n in ("v", "pattern", "z")):
                _check_z(cache, base)
            checked += 1
    if not checked:
        not_applicable(f"{pair.bridge.cfg.architecture} has no attention layer")


def _inputs_of(model: Any, modules: dict[str, torch.nn.Module]) -> tuple[dict[str, torch.Tensor], list]:
    """Forward pre-hooks recording each module's first input (or ``hidden_states``) under its key."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for key, module in modules.items():

        def record(_m: Any, args: tuple, kwargs: dict, key: str = key) -> None:
            seen.setdefault(key, args[0] if args else kwargs.get("hidden_states"))

        handles.append(module.register_forward_pre_hook(record, with_kwargs=True))
    return seen, handles


def _outputs_of(modules: dict[str, torch.nn.Module]) -> tuple[dict[str, torch.Tensor], list]:
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for key, module in modules.items():

        def record(_m: Any, _args: Any, out: Any, key: str = key) -> None:
            seen.setdefault(key, out[0] if isinstance(out, tuple | list) else out)

        handles.append(module.register_forward_hook(record))
    return seen, handles


def _attention_input(attn: Any) -> torch.nn.Module:
    """The HF module whose input is what the q/k/v projections read: the query projection of a ``SplitQKV`` or the
    fused one of a ``FusedQKV``, else the attention module itself (its ``hidden_states``)."""
    source = getattr(attn, "qkv", None)
    path = getattr(source, "q", None) if isinstance(source, SplitQKV) else getattr(source, "path", None)
    if isinstance(source, SplitQKV | FusedQKV) and path:
        return attn.hf_module.get_submodule(path)
    return attn.hf_module


def _mlp_modules(mlp: Any) -> tuple[torch.nn.Module | None, torch.nn.Module | None]:
    """The HF modules whose input is an MLP component's input and whose output is its ``out`` projection's."""
    paths = getattr(mlp, "paths", {}) or {}
    get = mlp.hf_module.get_submodule
    first = next((paths[k] for k in ("pre", "fused") if paths.get(k)), None)
    source = get(first) if first else None
    out = get(paths["out"]) if paths.get("out") else None
    return source, out


def _project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x`` ``[b, p, d_model]`` through ``weight`` ``[(h,) d_model, d]`` plus ``bias``."""
    if weight.ndim == 3:
        return einops.einsum(x.double(), weight.double(), "b p m, h m d -> b p h d") + bias.double()
    return x.double() @ weight.double() + bias.double()


@conformance_check(paths=("native",))
def check_projections(pair: Pair) -> None:
    """Every projection hook equals its layer's input times the weight view (from HF's parameters), and each MLP's
    hooks obey its algebra: ``hook_q/k/v = x @ W_Q/W_K/W_V + b`` (``x``: the input of the HF query projection; per
    key/value head under GQA; clamped to ``±qkv_clip`` where the attention component says HF clamps them);
    ``hook_pre = x @ W_gate + b_gate`` (gated; else ``W_in``), ``hook_pre_linear = x @ W_in + b_in``,
    ``hook_post = act(hook_pre) * hook_pre_linear`` (``act``: ``cfg.act_fn``; ``act(hook_pre)`` for plain MLPs) and
    the output projection's output ``= hook_post @ W_out + b_out``. So a swapped gate and up projection, a view of
    the wrong weights, or a wrong ``act_fn`` fails."""
    model = pair.bridge
    tokens = pair.tokens()
    attn_inputs: dict[str, torch.nn.Module] = {}
    mlp_inputs: dict[str, torch.nn.Module] = {}
    mlp_outputs: dict[str, torch.nn.Module] = {}
    layers: list[tuple[str, Any, Any]] = []
    for prefix, part in pair.parts():
        for layer, block in enumerate(part.blocks):
            name = f"{prefix}blocks.{layer}"
            attn = attention_of(block)
            if attn is not None and hasattr(attn, "qkv_weights"):
                child = next(n for n, m in block.named_children() if m is attn)
                attn_inputs[f"{name}.{child}"] = _attention_input(attn)
                layers.append((f"{name}.{child}", attn, part.cfg))
            for child, mlp in components(block, MLPWeights):
                if not hasattr(mlp, "hook_pre") or not hasattr(mlp, "hook_post"):
                    continue
                source, out = _mlp_modules(mlp)
                if source is None:
                    if mlp.hf_module is block.hf_module:
                        continue  # an inline MLP without a named input projection
                    source = mlp.hf_module
                mlp_inputs[f"{name}.{child}"] = source
                if out is not None:
                    mlp_outputs[f"{name}.{child}"] = out
                layers.append((f"{name}.{child}", mlp, part.cfg))
    if not layers:
        not_applicable(f"{model.cfg.architecture} has no attention or MLP with weight views")
        return
    inputs, handles = _inputs_of(model, {**attn_inputs, **mlp_inputs})
    outputs, out_handles = _outputs_of(mlp_outputs)
    try:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, return_type=None)
    finally:
        for handle in handles + out_handles:
            handle.remove()
    for base, component, cfg in layers:
        if base in attn_inputs:
            _check_attention_views(cache, base, component, inputs.get(base))
        else:
            _check_mlp(cache, base, component, cfg, inputs.get(base), outputs.get(base))


def _bound(x: torch.Tensor, weight: torch.Tensor) -> float:
    reduction = weight.shape[-2]
    return TOLERANCE + rounding_bound(float(x.detach().abs().max()) * float(weight.detach().abs().max()) * 4, reduction)


def _check_attention_views(cache: Any, base: str, attn: Any, x: torch.Tensor | None) -> None:
    if x is None:
        fail(f"{base}: the HF attention module was not called with hidden states the kit could record")
    views = {"q": ("W_Q", "b_Q"), "k": ("_W_K", "_b_K"), "v": ("_W_V", "_b_V")}
    for which, (w_name, b_name) in views.items():
        hook = f"{base}.hook_{which}"
        if hook not in cache:
            continue
        try:
            weight, bias = getattr(attn, w_name), getattr(attn, b_name)
        except (WeightViewError, NotImplementedError, AttributeError):
            continue  # no view of this projection (MLA's keys come from a normed latent)
        got = cache[hook]
        expected = _project(x, weight, bias)
        clip = getattr(attn, "qkv_clip", None)  # HF clamps the projections' outputs (MPT's clip_qkv)
        if clip:
            expected = expected.clamp(-clip, clip)
        if tuple(expected.shape) != tuple(got.shape) and expected.numel() == got.numel():
            expected = expected.reshape(got.shape)
        what = f"{hook} vs the attention's input @ {w_name.lstrip('_')} + {b_name.lstrip('_')}"
        expect_close(got, expected, what, tolerance=_bound(x, weight))


def _own_activation(mlp: Any) -> Any:
    """The HF MLP's own activation module when it has trained parameters (Apertus's xIELU ``alpha_p``/``alpha_n``),
    run in its parameters' dtype: ``ACT2FN`` would build one with default parameters."""
    own = getattr(getattr(mlp, "hf_module", None), "act_fn", None)
    params = list(own.parameters()) if isinstance(own, torch.nn.Module) else []
    if not params:
        return None
    return lambda t: own(t.to(params[0].dtype)).double()


def _check_mlp(cache: Any, base: str, mlp: Any, cfg: Any, x: torch.Tensor | None, out: torch.Tensor | None) -> None:
    pre, post = cache[f"{base}.hook_pre"].double(), cache[f"{base}.hook_post"].double()
    linear = cache.get(f"{base}.hook_pre_linear")
    gated = linear is not None
    if x is not None:
        try:
            w_pre, b_pre = (mlp.W_gate, mlp.b_gate) if gated else (mlp.W_in, mlp.b_in)
            projections = [("hook_pre", pre, w_pre, b_pre, "W_gate" if gated else "W_in")]
            if gated:
                projections.append(("hook_pre_linear", linear.double(), mlp.W_in, mlp.b_in, "W_in"))
        except (WeightViewError, NotImplementedError):
            projections = []
        for hook, got, weight, bias, w_name in projections:
            what = f"{base}.{hook} vs the MLP's input @ {w_name} + {'b_' + w_name[2:]}"
            expect_close(got, _project(x, weight, bias), what, tolerance=_bound(x, weight))
    act_name = cfg.act_fn
    if act_name not in ACT2FN:
        fail(f"cfg.act_fn is {act_name!r}, which names no activation transformers knows (ACT2FN); set the HF name")
    act = _own_activation(mlp) or ACT2FN[act_name]
    expected = act(pre) * linear.double() if gated else act(pre)
    formula = f"{act_name}(hook_pre) * hook_pre_linear" if gated else f"{act_name}(hook_pre)"
    bound = TOLERANCE + rounding_bound(float(post.abs().max()) + 1, 16)
    expect_close(post, expected, f"{base}.hook_post vs {formula}", tolerance=bound)
    if out is None:
        return
    try:
        weight, bias = mlp.W_out, mlp.b_out
    except (WeightViewError, NotImplementedError):
        return
    what = f"{base}: the output projection's output vs hook_post @ W_out + b_out"
    expect_close(out, _project(post, weight, bias), what, tolerance=_bound(post, weight))


__all__ = ["check_attention_algebra", "check_projections", "rotated_features", "rotation"]
