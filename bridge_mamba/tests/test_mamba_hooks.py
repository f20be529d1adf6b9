"""Mixer hooks hold what their names say (recomputed from the HF modules), and patching one
changes the computation exactly as the matching weight surgery on the HF model does."""

import copy
from collections.abc import Callable

import einops
import pytest
import torch
import torch.nn.functional as F

import bridge
from bridge_mamba import Mamba2Adapter, MambaAdapter

ATOL = 1e-4


def _mixer(model: torch.nn.Module, layer: int = 0) -> torch.nn.Module:
    return model.backbone.layers[layer].mixer


def test_mamba1_hooks_recomputed_from_hf_modules(pair_for):
    pair = pair_for(MambaAdapter)
    model, tokens = pair.bridge, pair.tokens(2, 9)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1."))
    m = _mixer(model.hf_model, 1)
    d, n, r = m.intermediate_size, m.ssm_state_size, m.time_step_rank
    with torch.no_grad():
        in_proj = m.in_proj(cache["blocks.1.hook_mixer_in"])
        x, gate = in_proj.split(d, dim=-1)
        conv = m.conv1d(x.transpose(1, 2))[..., : tokens.shape[1]].transpose(1, 2)  # the nn.Conv1d module
        u = F.silu(conv)
        x_dbl = m.x_proj(u)
        dt = F.softplus(m.dt_proj(x_dbl[..., :r]))
    expected = {"in_proj": in_proj, "conv": conv, "ssm_in": u, "x_proj": x_dbl, "dt": dt, "gate": F.silu(gate)}
    for name, value in expected.items():
        torch.testing.assert_close(cache[f"blocks.1.mixer.hook_{name}"], value, atol=1e-5, rtol=1e-5)
    assert cache["blocks.1.mixer.hook_y"].shape == (2, 9, d)
    assert cache["blocks.1.mixer.hook_x_proj"].shape == (2, 9, r + 2 * n)
    out = m.out_proj(cache["blocks.1.mixer.hook_y"] * cache["blocks.1.mixer.hook_gate"])
    torch.testing.assert_close(out, cache["blocks.1.mixer.hook_ssm_out"], atol=1e-5, rtol=0)


def test_mamba2_hooks_recomputed_from_hf_modules(pair_for):
    pair = pair_for(Mamba2Adapter)
    model, tokens = pair.bridge, pair.tokens(2, 9)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1."))
    m = _mixer(model.hf_model, 1)
    h, g, n = m.num_heads, m.n_groups, m.ssm_state_size
    with torch.no_grad():
        in_proj = m.in_proj(cache["blocks.1.hook_mixer_in"])
        gate, xBC, dt = in_proj.split([m.intermediate_size, m.conv_dim, h], dim=-1)
        conv = m.conv1d(xBC.transpose(1, 2))[..., : tokens.shape[1]].transpose(1, 2)
        x, B, C = F.silu(conv).split([m.intermediate_size, g * n, g * n], dim=-1)
        y = cache["blocks.1.mixer.hook_y"]
        inner_norm = m.norm(einops.rearrange(y, "b p h d -> b p (h d)"), gate)  # HF's gated norm
    expected = {
        "in_proj": in_proj,
        "conv": conv,
        "ssm_in": einops.rearrange(x, "b p (h d) -> b p h d", h=h),
        "B": einops.rearrange(B, "b p (g n) -> b p g n", g=g),
        "C": einops.rearrange(C, "b p (g n) -> b p g n", g=g),
        "dt": F.softplus(dt + m.dt_bias),
        "gate": F.silu(gate),
        "inner_norm": inner_norm,
    }
    for name, value in expected.items():
        torch.testing.assert_close(cache[f"blocks.1.mixer.hook_{name}"], value, atol=1e-5, rtol=1e-5)
    assert y.shape == (2, 9, h, m.head_dim)
    torch.testing.assert_close(m.out_proj(inner_norm), cache["blocks.1.mixer.hook_ssm_out"], atol=1e-5, rtol=0)


def _zero_conv_channels(channels: slice) -> Callable[[torch.nn.Module], None]:
    def surgery(mixer: torch.nn.Module) -> None:
        mixer.conv1d.weight[channels] = 0.0
        mixer.conv1d.bias[channels] = 0.0

    return surgery


def _set(tensor_path: str, index, value: float = 0.0) -> Callable[[torch.nn.Module], None]:
    def surgery(mixer: torch.nn.Module) -> None:
        mixer.get_parameter(tensor_path)[index] = value

    return surgery


def _constant_dt_weights(mixer: torch.nn.Module) -> None:
    """Δ becomes the constant ``softplus(1)``: no input dependence, bias 1."""
    if hasattr(mixer, "dt_proj"):
        mixer.dt_proj.weight.zero_()
        mixer.dt_proj.bias.fill_(1.0)
    else:
        mixer.in_proj.weight[-mixer.num_heads :] = 0.0
        mixer.dt_bias.fill_(1.0)


def _constant_dt(t: torch.Tensor, *_) -> torch.Tensor:
    return F.softplus(torch.ones(())).expand_as(t)


def _drop_skip(t: torch.Tensor, hook, mixer: torch.nn.Module, seen: dict) -> torch.Tensor:
    """``y - D·u``, with u from ``hook_ssm_in`` of the same pass."""
    u = seen[hook.name.replace("hook_y", "hook_ssm_in")]
    D = mixer.D if u.ndim == 3 else mixer.D[:, None]
    return t - u * D


# (adapter, hook, patch(t, hook, mixer, seen) -> tensor, surgery(mixer) in place)
CASES = {
    "mamba1-conv": (MambaAdapter, "hook_conv", lambda t, *_: t * 0, _zero_conv_channels(slice(None))),
    "mamba1-ssm_in": (
        MambaAdapter,
        "hook_ssm_in",
        lambda t, *_: t.index_fill(-1, torch.tensor([3]), 0.0),
        _zero_conv_channels(slice(3, 4)),
    ),
    "mamba1-in_proj-gate": (
        MambaAdapter,
        "hook_in_proj",
        lambda t, *_: torch.cat([t[..., : t.shape[-1] // 2], t[..., t.shape[-1] // 2 :] * 0], -1),
        lambda m: m.in_proj.weight[m.intermediate_size :].zero_(),
    ),
    "mamba1-x_proj-B": (
        MambaAdapter,
        "hook_x_proj",
        lambda t, hook, m, _: t.index_fill(-1, torch.arange(m.time_step_rank, m.time_step_rank + 3), 0.0),
        lambda m: m.x_proj.weight[m.time_step_rank : m.time_step_rank + 3].zero_(),
    ),
    "mamba1-dt": (MambaAdapter, "hook_dt", _constant_dt, _constant_dt_weights),
    "mamba1-dt_proj-zero": (
        MambaAdapter,
        "hook_dt_proj",
        lambda t, *_: t * 0,
        lambda m: (m.dt_proj.weight.zero_(), m.dt_proj.bias.zero_()),
    ),
    "mamba1-ssm_out-zero": (MambaAdapter, "hook_ssm_out", lambda t, *_: t * 0, lambda m: m.out_proj.weight.zero_()),
    "mamba2-ssm_out-zero": (Mamba2Adapter, "hook_ssm_out", lambda t, *_: t * 0, lambda m: m.out_proj.weight.zero_()),
    "mamba1-y-skip": (
        MambaAdapter,
        "hook_y",
        lambda t, hook, m, seen: _drop_skip(t, hook, m, seen),
        lambda m: m.D.zero_(),
    ),
    "mamba1-gate": (
        MambaAdapter,
        "hook_gate",
        lambda t, *_: t.index_fill(-1, torch.tensor([5, 9]), 0.0),
        _set("out_proj.weight", (slice(None), [5, 9])),
    ),
    "mamba2-conv": (Mamba2Adapter, "hook_conv", lambda t, *_: t * 0, _zero_conv_channels(slice(None))),
    "mamba2-ssm_in-head": (
        Mamba2Adapter,
        "hook_ssm_in",
        lambda t, *_: t.index_fill(2, torch.tensor([2]), 0.0),
        lambda m: _zero_conv_channels(slice(2 * m.head_dim, 3 * m.head_dim))(m),
    ),
    "mamba2-B-group": (
        Mamba2Adapter,
        "hook_B",
        lambda t, *_: t.index_fill(2, torch.tensor([1]), 0.0),
        lambda m: _zero_conv_channels(
            slice(m.intermediate_size + m.ssm_state_size, m.intermediate_size + 2 * m.ssm_state_size)
        )(m),
    ),
    "mamba2-C-group": (
        Mamba2Adapter,
        "hook_C",
        lambda t, *_: t.index_fill(2, torch.tensor([0]), 0.0),
        lambda m: _zero_conv_channels(
            slice(m.conv_dim - m.n_groups * m.ssm_state_size, m.conv_dim - (m.n_groups - 1) * m.ssm_state_size)
        )(m),
    ),
    "mamba2-dt": (Mamba2Adapter, "hook_dt", _constant_dt, _constant_dt_weights),
    "mamba2-y-skip": (
        Mamba2Adapter,
        "hook_y",
        lambda t, hook, m, seen: _drop_skip(t, hook, m, seen),
        lambda m: m.D.zero_(),
    ),
    "mamba2-gate-group": (
        Mamba2Adapter,
        "hook_gate",
        lambda t, hook, m, _: torch.cat([t[..., : m.norm.group_size] * 0, t[..., m.norm.group_size :]], -1),
        lambda m: m.out_proj.weight[:, : m.norm.group_size].zero_(),
    ),
    "mamba2-inner_norm": (
        Mamba2Adapter,
        "hook_inner_norm",
        lambda t, *_: t.index_fill(-1, torch.tensor([0, 7, 40]), 0.0),
        _set("out_proj.weight", (slice(None), [0, 7, 40])),
    ),
}


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("case", list(CASES))
def test_patching_a_mixer_hook_equals_weight_surgery(pair_for, case, layer):
    adapter, hook_name, patch, surgery = CASES[case]
    pair = pair_for(adapter)
    model, tokens = pair.bridge, pair.tokens()
    mixer = _mixer(model.hf_model, layer)
    seen: dict[str, torch.Tensor] = {}
    prefix = f"blocks.{layer}.mixer."
    patched = model.run_with_hooks(
        tokens,
        fwd_hooks=[
            (prefix + "hook_ssm_in", lambda t, hook: seen.__setitem__(hook.name, t)),
            (prefix + hook_name, lambda t, hook: patch(t, hook, mixer, seen)),
        ],
    )
    reference = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery(_mixer(reference, layer))
    expected = reference(tokens).logits
    torch.testing.assert_close(patched, expected, atol=ATOL, rtol=0)
    change = (expected - pair.reference(tokens).logits).abs().max().item()
    assert change > 1e-3, f"the surgery changed the logits by {change} only"


@pytest.mark.parametrize("adapter", [MambaAdapter, Mamba2Adapter])
def test_block_hooks_equal_weight_surgery(pair_for, adapter):
    """``hook_mixer_in`` doubled is the norm's weight doubled; ``mixer.hook_ssm_out`` zeroed is ``out_proj`` zeroed."""
    pair = pair_for(adapter)
    model, tokens = pair.bridge, pair.tokens()
    for hook, patch, surgery in (
        ("blocks.1.hook_mixer_in", lambda t, hook: 2 * t, lambda r: r.backbone.layers[1].norm.weight.mul_(2)),
        (
            "blocks.0.mixer.hook_ssm_out",
            lambda t, hook: 0 * t,
            lambda r: r.backbone.layers[0].mixer.out_proj.weight.zero_(),
        ),
    ):
        reference = copy.deepcopy(pair.reference)
        with torch.no_grad():
            surgery(reference)
        got = model.run_with_hooks(tokens, fwd_hooks=[(hook, patch)])
        torch.testing.assert_close(got, reference(tokens).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("adapter", [MambaAdapter, Mamba2Adapter])
def test_hooks_are_batch_first_with_documented_shapes(pair_for, adapter):
    pair = pair_for(adapter)
    model = pair.bridge
    model.set_opt_in("hook_ssm_state", True)
    _, cache = model.run_with_cache(pair.tokens(3, 5), names_filter=lambda n: n.startswith("blocks.0."))
    m = _mixer(model.hf_model)
    d, n = m.intermediate_size, m.ssm_state_size
    if adapter is MambaAdapter:
        shapes = {
            "in_proj": (2 * d,),
            "conv": (d,),
            "ssm_in": (d,),
            "x_proj": (m.time_step_rank + 2 * n,),
            "dt_proj": (d,),
            "dt": (d,),
            "ssm_state": (d, n),
            "y": (d,),
            "ssm_out": (model.cfg.d_model,),
            "gate": (d,),
        }
    else:
        h, hd, g = m.num_heads, m.head_dim, m.n_groups
        shapes = {
            "in_proj": (2 * d + 2 * g * n + h,),
            "conv": (d + 2 * g * n,),
            "ssm_in": (h, hd),
            "B": (g, n),
            "C": (g, n),
            "dt": (h,),
            "ssm_state": (h, hd, n),
            "y": (h, hd),
            "ssm_out": (model.cfg.d_model,),
            "gate": (d,),
            "inner_norm": (d,),
        }
    mixer_hooks = {k.rsplit("hook_", 1)[1] for k in cache if ".mixer." in k}
    assert mixer_hooks == set(shapes)
    for name, tail in shapes.items():
        assert cache[f"blocks.0.mixer.hook_{name}"].shape == (3, 5, *tail), name
    for name in ("hook_resid_pre", "hook_mixer_in", "mixer.hook_ssm_out", "hook_resid_post"):
        assert cache[f"blocks.0.{name}"].shape == (3, 5, model.cfg.d_model)


@pytest.mark.parametrize("adapter", [MambaAdapter, Mamba2Adapter])
def test_backward_hooks_receive_each_mixer_activations_gradient(pair_for, adapter):
    """For every mixer hook: the backward hook's gradient equals autograd's for a leaf put in its place."""
    pair = pair_for(adapter)
    model, tokens = pair.bridge, pair.tokens(1, 6)
    model.set_opt_in("hook_ssm_state", True)
    grads: dict[str, torch.Tensor] = {}
    leaves: dict[str, torch.Tensor] = {}

    def make_leaf(t: torch.Tensor, hook) -> torch.Tensor:
        leaves[hook.name] = t.detach().requires_grad_(True)
        return leaves[hook.name]

    for name in [n for n in model.hook_dict if n.startswith("blocks.0.mixer.")]:
        loss = model.run_with_hooks(
            tokens, return_type="loss", bwd_hooks=[(name, lambda g, hook: grads.__setitem__(hook.name, g))]
        )
        loss.backward()
        loss = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(name, make_leaf)])
        (expected,) = torch.autograd.grad(loss, leaves[name])
        torch.testing.assert_close(grads[name], expected, atol=1e-6, rtol=1e-4, msg=name)
        assert expected.abs().max() > 0, name


@pytest.mark.parametrize("adapter", [MambaAdapter, Mamba2Adapter])
def test_bridge_api_on_an_ssm(pair_for, adapter):
    """``stop_at_layer``, ``return_type="hidden"``/``"loss"`` and ``bridge.wrap`` need no attention either."""
    pair = pair_for(adapter)
    model, tokens = pair.bridge, pair.tokens()
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_pre"))
    torch.testing.assert_close(model(tokens, stop_at_layer=1), cache["resid_pre", 1], atol=0, rtol=0)
    reference = pair.reference(tokens, labels=tokens, use_cache=False, output_hidden_states=True)
    torch.testing.assert_close(model(tokens, return_type="hidden"), reference.hidden_states[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(model(tokens, return_type="loss"), reference.loss, atol=1e-5, rtol=0)
    wrapped = bridge.wrap(copy.deepcopy(pair.reference))
    assert type(wrapped.adapter) is adapter
    torch.testing.assert_close(wrapped.run_with_cache(tokens)[0], reference.logits, atol=1e-4, rtol=0)
