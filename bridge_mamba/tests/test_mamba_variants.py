"""Config variants the example models leave at their defaults: biases, fp32 residuals off, one B/C
group, an active Δ clamp. With every hook (and the state hook) in use, the bridge does what HF does,
on a full forward and while decoding."""

import json
import textwrap

import pytest
import torch

import bridge
from bridge.testing import examples_of, make_pair, run_isolated, save_tiny_model
from bridge_mamba import Mamba2Adapter, MambaAdapter, effective_attention

VARIANTS = {
    "mamba-biases": (MambaAdapter, {"use_bias": True, "use_conv_bias": False, "residual_in_fp32": False}),
    "mamba-rank4-state4": (MambaAdapter, {"time_step_rank": 4, "state_size": 4, "conv_kernel": 2}),
    "mamba2-one-group-clamped": (
        Mamba2Adapter,
        {"n_groups": 1, "time_step_limit": (0.0, 0.02), "use_bias": True, "residual_in_fp32": False},
    ),
    "mamba2-chunk-longer-than-input": (Mamba2Adapter, {"chunk_size": 64, "use_conv_bias": False}),
}


@pytest.fixture(scope="module")
def variant_dirs(tmp_path_factory):
    dirs = {}
    for name, (adapter, changes) in VARIANTS.items():
        config = examples_of(adapter).example_config()
        for key, value in changes.items():
            setattr(config, key, value)
        dirs[name] = save_tiny_model(config, tmp_path_factory.mktemp(name), seed=3)
    return dirs


def _forward_then_decode(hf, tokens: torch.Tensor) -> torch.Tensor:
    full = hf(tokens, use_cache=False).logits
    out = hf(input_ids=tokens[:, :4], use_cache=True)
    steps = [out.logits]
    for i in range(4, tokens.shape[1]):
        steps.append(hf(input_ids=tokens[:, i : i + 1], cache_params=out.cache_params, use_cache=True).logits)
    return torch.cat([full, *steps], dim=1)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_follows_hf_with_every_hook(variant_dirs, variant, reconstruct_ssm_out):
    adapter, changes = VARIANTS[variant]
    pair = make_pair(adapter, directory=variant_dirs[variant])
    model, tokens = pair.bridge, pair.tokens(2, 8)
    for key, value in changes.items():
        assert getattr(model.hf_model.config, key) == (list(value) if isinstance(value, tuple) else value)
    model.set_opt_in("hook_ssm_state", True)
    expected = _forward_then_decode(pair.reference, tokens)
    with model.hooks(fwd_hooks=[(lambda n: True, lambda t, hook: None)]):
        got = _forward_then_decode(model.hf_model, tokens)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: ".mixer." in n)
    M = effective_attention(cache, 1, model)
    assert torch.all(M.triu(1) == 0)
    y = cache["blocks.1.mixer.hook_y"]
    torch.testing.assert_close(reconstruct_ssm_out(model, cache, 1, M), y, atol=1e-4, rtol=0)


def test_bridge_config_describes_the_ssm(variant_dirs):
    model = make_pair(Mamba2Adapter, directory=variant_dirs["mamba2-one-group-clamped"]).bridge
    cfg = model.cfg
    hf = model.hf_model.config
    assert (cfg.n_heads, cfg.d_head, cfg.d_mlp) == (hf.num_heads, hf.head_dim, None)
    assert cfg.normalization_type == "RMS" and cfg.positional_embedding_type == "none"
    assert cfg.extra["n_groups"] == 1 and cfg.extra["d_state"] == hf.state_size
    assert cfg.architecture == "Mamba2ForCausalLM"
    mamba1 = make_pair(MambaAdapter, directory=variant_dirs["mamba-rank4-state4"]).bridge.cfg
    assert (mamba1.n_heads, mamba1.extra["dt_rank"], mamba1.extra["d_inner"]) == (0, 4, 64)


def test_loads_with_only_bridge_mamba_enabled(variant_dirs):
    """A tiny Mamba directory loads through entry-point discovery with every other plugin disabled."""
    script = textwrap.dedent(
        f"""
        import json, torch, bridge
        model = bridge.load({str(variant_dirs["mamba-biases"])!r})
        loaded = [p.distribution for p in bridge.get_registry().plugins if p.status == "loaded"]
        _, cache = model.run_with_cache("Hello world", names_filter=lambda n: n.endswith("hook_y"))
        print(json.dumps({{"adapter": type(model.adapter).__name__, "loaded": loaded, "hooks": len(cache)}}))
        """
    )
    result = run_isolated(script, "bridge-mamba")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"adapter": "MambaAdapter", "loaded": ["bridge-mamba"], "hooks": 2}


@pytest.mark.parametrize("adapter", [MambaAdapter, Mamba2Adapter])
def test_bfloat16_follows_hf_with_every_hook(model_dirs, pair_for, adapter):
    """In bfloat16 the re-expressed mixers keep HF's casts, on a full forward and while decoding."""
    directory = model_dirs[adapter.architectures[0]]
    pair_for(adapter)  # saves the session's tiny model
    model = bridge.load(directory, adapter=adapter, dtype=torch.bfloat16)
    reference = type(model.hf_model).from_pretrained(directory, dtype=torch.bfloat16).eval()
    tokens = torch.randint(1, 128, (2, 8), generator=torch.Generator().manual_seed(0))
    model.set_opt_in("hook_ssm_state", True)
    expected = _forward_then_decode(reference, tokens)
    with model.hooks(fwd_hooks=[(lambda n: True, lambda t, hook: None)]):
        got = _forward_then_decode(model.hf_model, tokens)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)
