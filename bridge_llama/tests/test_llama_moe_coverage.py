"""OLMoE, Qwen2-MoE, Qwen3-MoE, PhiMoE and Granite-MoE: what the conformance kit cannot see.

Routing rules against HF's routers, routing hooks against the HF routers' own outputs, patched router logits
against an HF model whose router logits are patched the same way (HF's own selection code then runs), Qwen2-MoE's
shared expert against HF's internals, autograd and weight surgery, dense layers, Granite's multipliers, OLMoE's
``clip_qkv`` refusal.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

import bridge
from bridge.kernel.components import MLP
from bridge.kernel.components.moe import MoE
from bridge.kernel.errors import ComponentMapError
from bridge.testing import build_tiny_model, examples_of, make_pair, save_tiny_model
from bridge_llama import GraniteMoeAdapter, OlmoeAdapter, PhimoeAdapter, Qwen2MoeAdapter, Qwen3MoeAdapter

MOE = (OlmoeAdapter, Qwen2MoeAdapter, Qwen3MoeAdapter, PhimoeAdapter, GraniteMoeAdapter)
ROUTING = ("hook_router_logits", "hook_expert_indices", "hook_expert_weights")


def close(got, expected, atol=1e-5):
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def hf_moe_blocks(hf_model):
    """``{layer: HF MoE block}`` for the layers whose MLP is sparse."""
    blocks = {i: getattr(layer, "block_sparse_moe", None) or layer.mlp for i, layer in enumerate(hf_model.model.layers)}
    return {i: block for i, block in blocks.items() if hasattr(block, "experts")}


def hf_router(block):
    return block.router if hasattr(block, "router") else block.gate


class PatchRouterLogits(TorchFunctionMode):
    """Apply ``patch`` to the logits HF's router computes from ``weight`` (the ``F.linear`` reading it), so the
    router's own selection code then runs on the patched logits."""

    def __init__(self, weight, patch):
        super().__init__()
        self.weight, self.patch = weight, patch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is F.linear and len(args) > 1 and args[1] is self.weight:
            out = self.patch(out)
        return out


@pytest.mark.parametrize("adapter", MOE, ids=lambda a: a.__name__)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 10.0]), n=st.integers(1, 9))
def test_routing_rule_reproduces_the_hf_router(adapter, seed, scale, n):
    """The adapter's routing function on the logits HF's router computed gives HF's own weights and indices."""
    config = examples_of(adapter).example_config()
    block = hf_moe_blocks(_cached_model(adapter))[0]
    router = hf_router(block)
    hidden = scale * torch.randn(n, config.hidden_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits, weights, indices = router(hidden)
        got_weights, got_indices = adapter(config).moe_options()["routing"](router, logits)
    assert torch.equal(got_indices, indices)
    close(got_weights.to(weights.dtype), weights, atol=1e-7)


_MODELS: dict = {}


def _cached_model(adapter):
    if adapter not in _MODELS:
        _MODELS[adapter] = build_tiny_model(examples_of(adapter).example_config()).eval()
    return _MODELS[adapter]


@pytest.mark.parametrize("adapter", MOE, ids=lambda a: a.__name__)
def test_routing_hooks_equal_the_hf_routers_outputs(pair_for, adapter):
    pair = pair_for(adapter)
    tokens = pair.tokens(2, 9)
    seen = {}
    handles = [
        hf_router(block).register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
        for i, block in hf_moe_blocks(pair.reference).items()
    ]
    try:
        expected_logits = pair.reference(tokens).logits
    finally:
        for handle in handles:
            handle.remove()
    logits, cache = pair.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith(ROUTING))
    close(logits, expected_logits, atol=1e-4)
    n_experts, k = pair.bridge.cfg.extra["n_experts"], pair.bridge.cfg.extra["experts_per_token"]
    for layer, (router_logits, weights, indices) in seen.items():
        got = {name: cache[f"blocks.{layer}.mlp.{name}"] for name in ROUTING}
        assert got["hook_router_logits"].shape == (2, 9, n_experts)
        assert got["hook_expert_indices"].shape == (2, 9, k if adapter is not PhimoeAdapter else 2)
        close(got["hook_router_logits"].flatten(0, 1), router_logits)
        assert torch.equal(got["hook_expert_indices"].flatten(0, 1), indices)
        close(got["hook_expert_weights"].flatten(0, 1), weights)


@pytest.mark.parametrize("adapter", MOE, ids=lambda a: a.__name__)
def test_patched_router_logits_equal_hf_routing_the_patched_logits(pair_for, adapter):
    """A patch at layer 0's ``hook_router_logits`` (noise, and the most used expert masked) gives the logits of an
    HF model whose layer-0 router logits are patched the same way before its own selection code runs."""
    pair = pair_for(adapter)
    model = pair.bridge
    tokens = pair.tokens(2, 10)
    _, clean = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_expert_indices")
    e = int(torch.bincount(clean["blocks.0.mlp.hook_expert_indices"].flatten()).argmax())
    n_experts = model.cfg.extra["n_experts"]
    noise = torch.randn(2 * 10, n_experts, generator=torch.Generator().manual_seed(3))

    def patch_flat(logits):  # [b·p, n_experts], as HF's router holds them
        return (logits + noise.to(logits.dtype)).index_fill(-1, torch.tensor([e]), float("-inf"))

    def patch_hook(logits, hook):  # [b, p, n_experts]
        return patch_flat(logits.flatten(0, 1)).reshape(logits.shape)

    with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_router_logits", patch_hook)]):
        logits, patched = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_expert_indices")
    assert not (patched["blocks.0.mlp.hook_expert_indices"] == e).any()
    weight = hf_router(hf_moe_blocks(pair.reference)[0]).weight
    with torch.no_grad(), PatchRouterLogits(weight, patch_flat):
        expected = pair.reference(tokens).logits
    close(logits, expected, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-3)


@pytest.mark.parametrize("adapter", MOE, ids=lambda a: a.__name__)
def test_expert_outputs_sum_to_the_routed_output(pair_for, adapter):
    """``hook_expert_outputs`` summed over slots is the MoE block's routed output: ``hook_mlp_out`` less the shared
    expert's contribution, before Granite's residual multiplier."""
    pair = pair_for(adapter)
    model = pair.bridge
    model.set_opt_in("hook_expert_outputs", True)
    tokens = pair.tokens()
    logits, cache = model.run_with_cache(tokens)
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    scale = getattr(pair.reference.config, "residual_multiplier", 1.0)
    for layer, block in enumerate(model.blocks):
        routed = cache[f"blocks.{layer}.mlp.hook_expert_outputs"].sum(-2)
        shared = cache.get(f"blocks.{layer}.mlp.hook_shared_expert_out", 0.0)
        assert isinstance(block.mlp, MoE)
        close((routed + shared) * scale, cache["mlp_out", layer])


# ---------------------------------------------------------------- Qwen2-MoE's shared expert


@pytest.fixture
def qwen2_moe(pair_for):
    return pair_for(Qwen2MoeAdapter)


def test_shared_expert_hooks_equal_hf_internals(qwen2_moe):
    """``mlp.shared_expert.hook_pre/_pre_linear/_post`` are HF's gate_proj, up_proj outputs and down_proj input;
    ``hook_shared_expert_out`` is ``sigmoid(shared_expert_gate(x)) * shared_expert(x)``, all from torch hooks on
    the reference."""
    pair = qwen2_moe
    tokens = pair.tokens(2, 7)
    ref_block = pair.reference.model.layers[1].mlp
    seen = {}

    def keep(name, use_input=False):
        def hook(module, args, out):
            seen[name] = args[0] if use_input else out

        return hook

    handles = [
        ref_block.shared_expert.gate_proj.register_forward_hook(keep("pre")),
        ref_block.shared_expert.up_proj.register_forward_hook(keep("pre_linear")),
        ref_block.shared_expert.down_proj.register_forward_hook(keep("post", use_input=True)),
        ref_block.shared_expert.register_forward_hook(keep("out")),
        ref_block.shared_expert_gate.register_forward_hook(keep("gate")),
    ]
    try:
        with torch.no_grad():
            expected_logits = pair.reference(tokens).logits
    finally:
        for handle in handles:
            handle.remove()
    logits, cache = pair.bridge.run_with_cache(tokens)
    close(logits, expected_logits, atol=1e-4)
    d_shared = pair.reference.config.shared_expert_intermediate_size
    for name in ("pre", "pre_linear", "post"):
        got = cache[f"blocks.1.mlp.shared_expert.hook_{name}"]
        assert got.shape == (2, 7, d_shared)
        close(got.flatten(0, 1), seen[name])
    contribution = cache["blocks.1.mlp.hook_shared_expert_out"]
    assert contribution.shape == (2, 7, pair.bridge.cfg.d_model)
    close(contribution.flatten(0, 1), torch.sigmoid(seen["gate"]) * seen["out"])


@pytest.mark.parametrize("hook", ["mlp.hook_shared_expert_out", "mlp.shared_expert.hook_post"])
def test_zeroing_the_shared_expert_equals_zeroing_its_down_projection(qwen2_moe, hook):
    pair = qwen2_moe
    tokens = pair.tokens()
    logits = pair.bridge.run_with_hooks(tokens, fwd_hooks=[(f"blocks.0.{hook}", lambda t, hook: torch.zeros_like(t))])
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[0].mlp.shared_expert.down_proj.weight.zero_()
        expected = surgery(tokens).logits
    close(logits, expected, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-3)


def test_shared_expert_gradient_is_the_moe_blocks_output_gradient(qwen2_moe):
    """``hook_shared_expert_out`` is added to the routed sum, so d(loss)/d(it) is the gradient at HF's MoE block
    output, taken from the reference's autograd."""
    pair = qwen2_moe
    tokens = pair.tokens(1, 8)
    grads = {}
    loss = pair.bridge.run_with_hooks(
        tokens,
        bwd_hooks=[("blocks.0.mlp.hook_shared_expert_out", lambda g, hook: grads.__setitem__("g", g))],
        return_type="loss",
    )
    loss.backward()
    leaf = {}

    def make_leaf(module, args, out):
        leaf["x"] = out.detach().requires_grad_(True)
        return leaf["x"]

    handle = pair.reference.model.layers[0].mlp.register_forward_hook(make_leaf)
    try:
        ref_loss = pair.reference(tokens, labels=tokens).loss
    finally:
        handle.remove()
    (expected,) = torch.autograd.grad(ref_loss, leaf["x"])
    assert expected.abs().max() > 0
    close(grads["g"], expected, atol=1e-6)


def test_shared_expert_hooks_leave_no_attachment_behind(qwen2_moe):
    """After a run with the shared expert hooked, HF's MoE block and shared expert run their own forwards again."""
    pair = qwen2_moe
    tokens = pair.tokens()
    pair.bridge.run_with_cache(tokens, names_filter=lambda n: "shared_expert" in n)
    block = pair.bridge.hf_model.model.layers[0].mlp
    assert "forward" not in block.__dict__ and "forward" not in block.shared_expert.__dict__
    close(pair.bridge(tokens), pair.reference(tokens).logits, atol=1e-4)


# ---------------------------------------------------------------- dense layers among sparse ones


@pytest.mark.parametrize(
    ("adapter", "variant", "dense_layers"),
    [
        (Qwen2MoeAdapter, "qwen2-moe-dense-first", {0}),
        (Qwen2MoeAdapter, "qwen2-moe-mlp-only-last", {1}),
        (Qwen3MoeAdapter, "qwen3-moe-dense-first", {0}),
    ],
)
def test_dense_layers_get_the_dense_mlp(tmp_path, adapter, variant, dense_layers):
    """Where HF builds a dense MLP (``decoder_sparse_step``, ``mlp_only_layers``), the block's ``mlp`` is the dense
    ``MLP`` with ``hook_pre``/``hook_post`` ``[b, p, intermediate_size]``; elsewhere it is the MoE."""
    config = examples_of(adapter).conformance_configs()[variant]
    pair = make_pair(adapter, path="native", directory=save_tiny_model(config, tmp_path))
    tokens = pair.tokens(2, 5)
    logits, cache = pair.bridge.run_with_cache(tokens)
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    for layer, block in enumerate(pair.bridge.blocks):
        hf_dense = not hasattr(pair.bridge.hf_model.model.layers[layer].mlp, "experts")
        assert hf_dense == (layer in dense_layers)
        if hf_dense:
            assert type(block.mlp) is MLP
            assert cache[f"blocks.{layer}.mlp.hook_pre"].shape == (2, 5, config.intermediate_size)
            assert f"blocks.{layer}.mlp.hook_router_logits" not in pair.bridge.hook_dict
        else:
            assert isinstance(block.mlp, MoE)
            assert f"blocks.{layer}.mlp.hook_router_logits" in cache


# ---------------------------------------------------------------- Granite-MoE's multipliers


@pytest.fixture
def granite(pair_for):
    return pair_for(GraniteMoeAdapter)


def test_granite_hook_embed_is_after_the_embedding_multiplier(granite):
    pair = granite
    tokens = pair.tokens()
    _, cache = pair.bridge.run_with_cache(tokens)
    config = pair.reference.config
    assert config.embedding_multiplier != 1.0
    with torch.no_grad():
        embedded = pair.reference.model.embed_tokens(tokens)
    close(cache["hook_embed"], embedded * config.embedding_multiplier, atol=0)
    close(cache["resid_pre", 0], cache["hook_embed"], atol=0)


def test_granite_sublayer_outputs_are_scaled_before_the_residual_sum(granite):
    """``hook_attn_out`` is HF's attention output times ``residual_multiplier`` (what the layer adds)."""
    pair = granite
    tokens = pair.tokens()
    seen = {}
    ref_layer = pair.reference.model.layers[1]
    handles = [
        ref_layer.self_attn.register_forward_hook(lambda m, a, out: seen.__setitem__("attn", out[0])),
        ref_layer.block_sparse_moe.register_forward_hook(lambda m, a, out: seen.__setitem__("moe", out)),
    ]
    try:
        with torch.no_grad():
            pair.reference(tokens)
    finally:
        for handle in handles:
            handle.remove()
    _, cache = pair.bridge.run_with_cache(tokens)
    m = pair.reference.config.residual_multiplier
    close(cache["attn_out", 1], seen["attn"] * m)
    close(cache["mlp_out", 1], seen["moe"] * m)


def test_granite_logits_are_the_unembedding_divided_by_logits_scaling(granite):
    """HF divides the logits by ``logits_scaling`` after ``lm_head``; ``W_U`` includes the division (logit lens)."""
    pair = granite
    tokens = pair.tokens()
    logits, cache = pair.bridge.run_with_cache(tokens)
    with torch.no_grad():
        final = pair.reference.model.norm(cache["resid_post", pair.bridge.cfg.n_layers - 1])
    close(logits, final @ pair.bridge.W_U + pair.bridge.b_U)
    with torch.no_grad():
        close(logits, pair.reference.lm_head(final) / pair.reference.config.logits_scaling)
    close(logits, pair.reference(tokens).logits, atol=1e-4)


# ---------------------------------------------------------------- OLMoE's clip_qkv


def test_olmoe_with_clip_qkv_is_refused_with_the_reason(tmp_path):
    example = examples_of(OlmoeAdapter).example_config()
    config = type(example)(**{**example.to_diff_dict(), "clip_qkv": 8.0})
    directory = save_tiny_model(config, tmp_path)
    with pytest.raises(ComponentMapError, match=r"clip_qkv=8\.0.*clip_qkv=None only"):
        bridge.load(str(directory), adapter=OlmoeAdapter)


@pytest.mark.parametrize("implementation", ["batched_mm", "grouped_mm"])
@pytest.mark.parametrize("adapter", [Qwen2MoeAdapter, PhimoeAdapter, GraniteMoeAdapter], ids=lambda a: a.__name__)
def test_hooks_under_other_experts_implementations(pair_for, adapter, implementation):
    """The routing, per-slot and shared-expert hooks sit on the router, experts and shared-expert modules, so they
    work whichever kernel HF dispatches the experts to."""
    pair = pair_for(adapter)
    model = bridge.load(pair.bridge.hf_model.name_or_path, adapter=adapter, experts_implementation=implementation)
    assert model.hf_model.config._experts_implementation == implementation
    model.set_opt_in("hook_expert_outputs", True)
    tokens = pair.tokens()
    logits, cache = model.run_with_cache(tokens)
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    scale = getattr(pair.reference.config, "residual_multiplier", 1.0)
    routed = cache["blocks.1.mlp.hook_expert_outputs"].sum(2)
    close((routed + cache.get("blocks.1.mlp.hook_shared_expert_out", 0.0)) * scale, cache["mlp_out", 1])


def test_phimoe_fold_ln_is_refused_because_its_experts_have_no_biases(pair_for):
    """PhiMoE's LayerNorm bias would have to become a bias of every expert's gate/up projection, which HF's experts
    module does not have: processing says so and leaves the model as it was."""
    from bridge.analysis.processing import WeightProcessingError

    pair = pair_for(PhimoeAdapter)
    before = {name: p.detach().clone() for name, p in pair.bridge.hf_model.named_parameters()}
    with pytest.raises(WeightProcessingError, match=r"ln2's bias into .*experts .*no bias"):
        pair.bridge.process_weights()
    for name, p in pair.bridge.hf_model.named_parameters():
        assert torch.equal(p, before[name]), name
    tokens = pair.tokens()
    close(pair.bridge(tokens), pair.reference(tokens).logits, atol=1e-4)
