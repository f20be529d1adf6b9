"""Phi-1/2, StableLM, Cohere 1/2, GLM and GLM-4: what the conformance kit cannot see (RoPE on adjacent pairs,
per-head q/k norms, Cohere's logit scale, which block each config builds), on the example configs and on the
real-checkpoint variants, checked against references computed here by hand or weight surgery on the HF model."""

import copy

import pytest
import torch

from bridge.kernel.components import SequentialBlock, SharedNormParallelBlock
from bridge.testing import examples_of, make_pair, save_tiny_model
from bridge_llama import (
    PARALLEL_ADAPTERS,
    Cohere2Adapter,
    CohereAdapter,
    Glm4Adapter,
    GlmAdapter,
    PhiAdapter,
    StableLmAdapter,
)
from bridge_llama.components import SandwichBlock

ATOL = 1e-5

#: Real-checkpoint switches on tiny configs (the adapters' ``conformance_configs``, which
#: ``test_llama_conformance`` runs through the kit on both paths), by id: (adapter, config).
VARIANTS = {
    name: (a, config) for a in PARALLEL_ADAPTERS for name, config in examples_of(a).conformance_configs().items()
}

#: Whether each architecture rotates adjacent pairs of dims (else the two halves of the rotary dims).
ADJACENT_PAIRS = {
    PhiAdapter: False,
    StableLmAdapter: False,
    CohereAdapter: True,
    Cohere2Adapter: True,
    Glm4Adapter: True,
    GlmAdapter: True,
}


def case_id(case):
    """A test id: a variant's name, an adapter's architecture, a class's name."""
    if isinstance(case, str):
        return case
    if hasattr(case, "architectures"):
        return case.architectures[0]
    return getattr(case, "__name__", "-".join(sorted(case)) if isinstance(case, set) else str(case))


def close(got, expected, atol=ATOL):
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def variant_config(name):
    return VARIANTS[name][1]


@pytest.fixture(scope="module")
def variant_dirs(tmp_path_factory):
    return {name: save_tiny_model(variant_config(name), tmp_path_factory.mktemp(name)) for name in VARIANTS}


@pytest.fixture
def pair_named(pair_for, variant_dirs):
    """A bridge/reference pair of an example config (named by adapter) or of a variant (named by its key)."""

    def build(name, path="native"):
        if isinstance(name, str):
            return make_pair(VARIANTS[name][0], path=path, directory=variant_dirs[name])
        return pair_for(name, path=path)

    return build


def test_variants_have_the_switches_they_name():
    assert set(VARIANTS) == {
        "phi-2-style",
        "phi-qk-layernorm",
        "stablelm-3b-4e1t-style",
        "stablelm-2-12b-style",
        "command-r-plus-style",
        "command-r7b-style",
        "persimmon-8b-style",
        "persimmon-without-qk-layernorm",
    }
    phi2 = variant_config("phi-2-style")
    assert phi2.hidden_size // phi2.num_attention_heads == 20 and phi2.rope_parameters["partial_rotary_factor"] == 0.4
    assert variant_config("phi-qk-layernorm").qk_layernorm
    assert not variant_config("stablelm-3b-4e1t-style").use_qkv_bias
    big = variant_config("stablelm-2-12b-style")
    assert big.use_parallel_residual and big.qk_layernorm and big.num_key_value_heads < big.num_attention_heads
    plus = variant_config("command-r-plus-style")
    assert plus.use_qk_norm and plus.logit_scale == 0.8333
    r7b = variant_config("command-r7b-style")
    assert r7b.layer_types == ["sliding_attention"] * 3 + ["full_attention"] and r7b.sliding_window == 4
    persimmon = variant_config("persimmon-8b-style")
    assert persimmon.qk_layernorm and persimmon.rope_parameters["partial_rotary_factor"] == 0.5
    assert not variant_config("persimmon-without-qk-layernorm").qk_layernorm


# --------------------------------------------------------------------------- block layouts


@pytest.mark.parametrize(
    ("name", "wiring", "norms"),
    [
        (PhiAdapter, SharedNormParallelBlock, {"ln1"}),
        (StableLmAdapter, SequentialBlock, {"ln1", "ln2"}),
        ("stablelm-2-12b-style", SharedNormParallelBlock, {"ln1"}),
        (CohereAdapter, SharedNormParallelBlock, {"ln1"}),
        (Cohere2Adapter, SharedNormParallelBlock, {"ln1"}),
        (Glm4Adapter, SandwichBlock, {"ln1", "ln1_post", "ln2", "ln2_post"}),
        (GlmAdapter, SequentialBlock, {"ln1", "ln2"}),
    ],
    ids=case_id,
)
def test_block_layout_follows_the_config(pair_named, name, wiring, norms):
    model = pair_named(name).bridge
    block = model.blocks[0]
    assert type(block) is wiring
    assert {n for n in ("ln1", "ln1_post", "ln2", "ln2_post") if hasattr(block, n)} == norms
    assert model.cfg.parallel_attn_mlp == (wiring is SharedNormParallelBlock)
    assert model.cfg.normalization_type == ("RMS" if name in (Glm4Adapter, GlmAdapter) else "LN")


# --------------------------------------------------------------------------- RoPE


def rotate_by_hand(x, positions, theta, rotary_dim, adjacent):
    """RoPE written out: ``x`` ``[b, p, h, d]``; pair ``i`` of the first ``rotary_dim`` dims, ``(2i, 2i+1)`` when
    ``adjacent`` else ``(i, i + rotary_dim/2)``, turned by ``position · theta^(-2i/rotary_dim)``."""
    half = rotary_dim // 2
    angles = positions[:, :, None] * theta ** (-torch.arange(half, dtype=torch.float64) * 2 / rotary_dim)  # [b, p, r/2]
    cos, sin = angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]  # [b, p, 1, r/2]
    x64 = x.double()
    first, second = (
        (x64[..., 0:rotary_dim:2], x64[..., 1:rotary_dim:2])
        if adjacent
        else (
            x64[..., :half],
            x64[..., half:rotary_dim],
        )
    )
    turned_first, turned_second = first * cos - second * sin, second * cos + first * sin
    out = x64.clone()
    if adjacent:
        out[..., 0:rotary_dim:2], out[..., 1:rotary_dim:2] = turned_first, turned_second
    else:
        out[..., :half], out[..., half:rotary_dim] = turned_first, turned_second
    return out.to(x.dtype)


ROTARY_CASES = [
    *ADJACENT_PAIRS,
    "phi-2-style",
    "phi-qk-layernorm",
    "stablelm-2-12b-style",
    "command-r-plus-style",
    "command-r7b-style",
]


@pytest.mark.parametrize("name", ROTARY_CASES, ids=case_id)
def test_rot_q_k_are_rope_by_hand_of_the_pre_rotary_q_k(pair_named, name):
    """``hook_rot_q/k`` equal RoPE computed here (adjacent pairs for Cohere and GLM, halves for Phi and StableLM;
    only the first ``rotary_dim`` dims turn) on ``hook_q/k`` (``hook_q/k_normed`` where the model has q/k norms).
    Cohere 2's full-attention layers have no positions: there ``hook_rot_q/k`` are ``hook_q/k``."""
    pair = pair_named(name)
    model = pair.bridge
    config = model.hf_model.config
    adapter = VARIANTS[name][0] if isinstance(name, str) else name
    rope = config.rope_parameters
    d_head = model.cfg.d_head
    rotary_dim = int(d_head * rope.get("partial_rotary_factor", 1.0))
    assert model.cfg.rotary_dim == rotary_dim and model.cfg.rotary_adjacent_pairs == ADJACENT_PAIRS[adapter]
    b, p = 2, 9
    tokens = pair.tokens(b, p)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: ".attn.hook_" in n)
    positions = torch.arange(p, dtype=torch.float64).expand(b, p)
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * model.cfg.n_layers
    for layer in range(model.cfg.n_layers):
        normed = f"blocks.{layer}.attn.hook_q_normed" in cache
        q = cache[f"blocks.{layer}.attn.hook_q_normed"] if normed else cache["q", layer]
        k = cache[f"blocks.{layer}.attn.hook_k_normed"] if normed else cache["k", layer]
        if adapter is Cohere2Adapter and layer_types[layer] == "full_attention":
            close(cache["rot_q", layer], q, atol=0)
            close(cache["rot_k", layer], k, atol=0)
            continue
        for rotated, raw in ((cache["rot_q", layer], q), (cache["rot_k", layer], k)):
            close(rotated, rotate_by_hand(raw, positions, rope["rope_theta"], rotary_dim, ADJACENT_PAIRS[adapter]))
            assert not torch.allclose(rotated[:, 1:], raw[:, 1:], atol=1e-3), "RoPE changed nothing"
            close(rotated[..., rotary_dim:], raw[..., rotary_dim:], atol=0)  # the tail passes through


# --------------------------------------------------------------------------- q/k norms

QK_NORM_CASES = ["phi-qk-layernorm", "stablelm-2-12b-style", "command-r-plus-style"]


def hf_qk_norm(attn, name):
    """The HF q or k norm module: ``q_layernorm`` (Phi, StableLM) or ``q_norm`` (Cohere)."""
    return getattr(attn, f"{name}_layernorm", None) or getattr(attn, f"{name}_norm")


def hf_qk_norm_weights(module, heads):
    """A q or k norm's weight and bias as ``[heads, d_head]`` (StableLM: one norm per head; Phi: one shared by the
    heads; Cohere: a ``[heads, d_head]`` weight and no bias)."""
    if hasattr(module, "norms"):
        weight, bias = torch.stack([n.weight for n in module.norms]), None
    else:
        weight, bias = module.weight, getattr(module, "bias", None)
    return weight.expand(heads, -1), None if bias is None else bias.expand(heads, -1)


@pytest.mark.parametrize("name", QK_NORM_CASES)
def test_qk_norm_hooks_are_layer_norms_by_hand_of_hook_q_k(pair_named, name):
    """``hook_q_normed``/``hook_k_normed`` ``[b, p, heads, d_head]`` are a LayerNorm over each head's ``d_head``
    dims of ``hook_q``/``hook_k``, with that head's weight (Cohere: a ``[heads, d_head]`` weight; StableLM: one
    norm per head; Phi: one norm shared by the heads), computed here."""
    pair = pair_named(name)
    model = pair.bridge
    cfg = model.cfg
    attn = model.hf_model.base_model.layers[1].self_attn
    with torch.no_grad():  # Cohere's 2-D norm weights are left at ones by the kit's initialisation
        for module in (getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)):
            if module is not None:
                module.weight.add_(0.1 * torch.randn(module.weight.shape, generator=torch.Generator().manual_seed(5)))
    tokens = pair.tokens(2, 7)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1.attn.hook_"))
    for name_, heads in (("q", cfg.n_heads), ("k", cfg.n_key_value_heads)):
        module = hf_qk_norm(attn, name_)
        weight, bias = hf_qk_norm_weights(module, heads)
        raw = cache[name_, 1].double()  # [b, p, heads, d_head]
        centred = raw - raw.mean(-1, keepdim=True)
        eps = getattr(module, "variance_epsilon", None) or model.hf_model.config.layer_norm_eps
        expected = centred / (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt() * weight.double()
        if bias is not None:
            expected = expected + bias.double()
        got = cache[f"blocks.1.attn.hook_{name_}_normed"]
        assert got.shape == (2, 7, heads, cfg.d_head)
        close(got, expected.float())


@pytest.mark.parametrize("name", QK_NORM_CASES)
def test_patch_at_hook_k_normed_equals_scaling_the_k_norm(pair_named, name):
    """Doubling ``hook_k_normed`` in layer 0 equals doubling the HF k norm's weight and bias."""
    pair = pair_named(name)
    tokens = pair.tokens()
    logits = pair.bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_k_normed", lambda k, hook: k * 2.0)])
    surgery = copy.deepcopy(pair.reference)
    attn = surgery.model.layers[0].self_attn
    module = hf_qk_norm(attn, "k")
    with torch.no_grad():
        for param in module.parameters():
            param.mul_(2.0)
    close(logits, surgery(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)


# --------------------------------------------------------------------------- Cohere's logit scale


@pytest.mark.parametrize("name", [CohereAdapter, Cohere2Adapter, "command-r-plus-style"], ids=case_id)
def test_cohere_logit_scale_is_in_w_u(pair_named, name):
    """``W_U`` is the (tied) LM head's weight times ``logit_scale``, so the logit lens at the last layer —
    ``ln_final`` of the final residual stream ``@ W_U + b_U`` — is HF's logits; the raw head's output is not."""
    pair = pair_named(name)
    model = pair.bridge
    scale = model.hf_model.config.logit_scale
    assert scale != 1.0 and model.cfg.extra["logit_scale"] == scale
    head = pair.reference.lm_head.weight  # [d_vocab, d_model]
    close(model.W_U, head.T * scale, atol=0)
    tokens = pair.tokens(2, 6)
    expected = pair.reference(tokens).logits
    _, cache = model.run_with_cache(tokens)
    lens = cache.accumulated_resid(apply_ln=True)[-1]  # [b, p, d_model]
    close(lens @ model.W_U + model.b_U, expected, atol=1e-4)
    assert not torch.allclose(lens @ head.T, expected, atol=1e-2)


def test_phi_biased_head_is_b_u(pair_named):
    """Phi's LM head has a bias: ``b_U`` is it, and the logit lens adds it."""
    pair = pair_named(PhiAdapter)
    model = pair.bridge
    close(model.b_U, pair.reference.lm_head.bias, atol=0)
    tokens = pair.tokens(2, 6)
    _, cache = model.run_with_cache(tokens)
    lens = cache.accumulated_resid(apply_ln=True)[-1]
    close(lens @ model.W_U + model.b_U, pair.reference(tokens).logits, atol=1e-4)
