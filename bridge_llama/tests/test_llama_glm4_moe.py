"""GLM-4-MoE: the conformance kit on GLM-4.5's switches (q/k norms, one expert group, ``routed_scaling_factor`` 2.5;
the kit also runs them and GLM-4.5-Air's as ``conformance_configs()``) with a non-zero ``e_score_correction_bias``
(HF initialises it to zeros, so a tiny model would never exercise it); and what the kit cannot see: the routing hooks
against HF's router, the routing rule written out here, the shared expert, partial rotary, dense first layers."""

import copy

import pytest
import torch
import torch.nn.functional as F

from bridge.testing import ALL_CHECKS, examples_of, make_pair
from bridge.testing.fixtures import build_tiny_model, sensitize, tiny_tokenizer
from bridge_llama import Glm4MoeAdapter

ATOL = 1e-5


def close(got, expected, atol=ATOL):
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def save_with_bias(config, directory, seed=0):
    """The kit's tiny model, with a random ``e_score_correction_bias`` (std 0.5) in every router."""
    model = build_tiny_model(config, seed)
    sensitize(model, seed)
    generator = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for layer in model.model.layers[config.first_k_dense_replace :]:
            bias = layer.mlp.gate.e_score_correction_bias
            bias.copy_(0.5 * torch.randn(bias.shape, generator=generator))
    model.save_pretrained(directory, safe_serialization=True)
    tiny_tokenizer(config.vocab_size).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def glm45_dir(tmp_path_factory):
    config = examples_of(Glm4MoeAdapter).conformance_configs()["glm4.5-style"]
    return save_with_bias(config, tmp_path_factory.mktemp("glm4.5-style-biased"))


@pytest.fixture(scope="module")
def biased_dir(tmp_path_factory):
    return save_with_bias(examples_of(Glm4MoeAdapter).example_config(), tmp_path_factory.mktemp("glm4-moe-biased"))


@pytest.mark.parametrize("path", ["native", "hooked"])
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_glm45_style_with_correction_bias_conformance(glm45_dir, check, path):
    """The kit runs ``conformance_configs()`` with the bias at zero; here GLM-4.5's switches with a bias."""
    pair = make_pair(Glm4MoeAdapter, path=path, directory=glm45_dir)
    model = pair.bridge.hf_model
    assert model.config.routed_scaling_factor == 2.5 and model.config.n_group == 1
    assert model.model.layers[1].mlp.gate.e_score_correction_bias.abs().min() > 0
    assert hasattr(model.model.layers[0].self_attn, "q_norm")
    check(pair)


def test_checkpoint_style_configs_carry_the_switches():
    configs = examples_of(Glm4MoeAdapter).conformance_configs()
    for config in configs.values():
        assert config.n_group == 1 and config.routed_scaling_factor == 2.5 and config.attention_bias
        assert config.rope_parameters["partial_rotary_factor"] == 0.5 and not config.tie_word_embeddings
    assert configs["glm4.5-style"].use_qk_norm and not configs["glm4.5-air-style"].use_qk_norm


@pytest.fixture
def pair(biased_dir):
    return make_pair(Glm4MoeAdapter, directory=biased_dir)


def glm_rule(logits, gate):
    """GLM-4-MoE's routing written out: sigmoid scores; among the ``topk_group`` groups whose two best
    ``score + bias`` sum highest, the ``top_k`` experts by ``score + bias``; weights are their scores,
    normalised, times ``routed_scaling_factor``. Returns (weights, indices) sorted by expert index."""
    scores = torch.sigmoid(logits)
    choice = scores + gate.e_score_correction_bias
    n, per_group = logits.shape[0], gate.num_experts // gate.num_group
    best_two = choice.view(n, gate.num_group, per_group).topk(2, dim=-1).values.sum(-1)  # [N, groups]
    groups = best_two.topk(gate.topk_group, dim=-1).indices
    allowed = torch.zeros(n, gate.num_group, dtype=torch.bool).scatter(1, groups, True)
    choice = choice.masked_fill(~allowed.repeat_interleave(per_group, dim=1), float("-inf"))
    indices = choice.topk(gate.top_k, dim=-1).indices.sort(-1).values
    weights = scores.gather(1, indices)
    return weights / weights.sum(-1, keepdim=True) * gate.routed_scaling_factor, indices


def sorted_selection(weights, indices):
    order = indices.argsort(-1)
    return weights.gather(-1, order), indices.gather(-1, order)


def test_routing_hooks_follow_hf_router_and_the_rule_written_out(pair):
    model = pair.bridge
    tokens = pair.tokens(2, 9)
    gate = pair.reference.model.layers[1].mlp.gate
    seen = {}
    handle = gate.register_forward_hook(lambda _m, _a, out: seen.__setitem__("out", out))
    try:
        ref_logits = pair.reference(tokens).logits
    finally:
        handle.remove()
    hf_router_logits, hf_weights, hf_indices = seen["out"]
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1.mlp.hook_"))
    close(logits, ref_logits, atol=1e-4)
    router_logits = cache["blocks.1.mlp.hook_router_logits"].flatten(0, 1)
    close(router_logits, hf_router_logits)
    weights, indices = sorted_selection(
        cache["blocks.1.mlp.hook_expert_weights"].flatten(0, 1), cache["blocks.1.mlp.hook_expert_indices"].flatten(0, 1)
    )
    hf_weights, hf_indices = sorted_selection(hf_weights, hf_indices)
    assert torch.equal(indices, hf_indices)
    close(weights, hf_weights)
    rule_weights, rule_indices = glm_rule(hf_router_logits, gate)
    assert torch.equal(indices, rule_indices)
    close(weights, rule_weights)


def test_correction_bias_changes_the_choice_but_not_the_weights(pair):
    """A large bias on expert 5 makes every token choose it, with weight from its unbiased score."""
    model = pair.bridge
    gate = model.hf_model.model.layers[1].mlp.gate
    with torch.no_grad():
        gate.e_score_correction_bias[5] = 10.0
    tokens = pair.tokens()
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1.mlp.hook_"))
    indices = cache["blocks.1.mlp.hook_expert_indices"]
    assert (indices == 5).any(-1).all()
    weights, indices = sorted_selection(cache["blocks.1.mlp.hook_expert_weights"], indices)
    scores = torch.sigmoid(cache["blocks.1.mlp.hook_router_logits"]).gather(-1, indices)
    close(weights, scores / scores.sum(-1, keepdim=True) * 2.5)


def test_patching_router_logits_equals_an_hf_router_reading_the_same_logits(pair):
    """Raising the least used expert's logits by 10 in layer 1 reroutes tokens to it, exactly as an HF router
    whose logits are raised the same way."""
    model = pair.bridge
    tokens = pair.tokens(2, 10)
    _, clean = model.run_with_cache(tokens, names_filter="blocks.1.mlp.hook_expert_indices")
    e = int(torch.bincount(clean["blocks.1.mlp.hook_expert_indices"].flatten(), minlength=8).argmin())

    def boost(logits, hook):
        return logits + 10.0 * F.one_hot(torch.tensor(e), 8)

    with model.hooks(fwd_hooks=[("blocks.1.mlp.hook_router_logits", boost)]):
        logits, patched = model.run_with_cache(tokens, names_filter="blocks.1.mlp.hook_expert_indices")
    used = lambda cache: (cache["blocks.1.mlp.hook_expert_indices"] == e).sum()  # noqa: E731
    assert used(patched) > used(clean)
    reference = copy.deepcopy(pair.reference)
    gate = reference.model.layers[1].mlp.gate

    def boosted_gate(hidden):
        router_logits = F.linear(hidden.reshape(-1, gate.hidden_dim), gate.weight)
        router_logits = router_logits + 10.0 * F.one_hot(torch.tensor(e), 8)
        return (router_logits, *glm_rule(router_logits, gate))

    gate.forward = boosted_gate
    close(logits, reference(tokens).logits, atol=1e-4)
    assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-4)


def test_shared_expert_and_routed_experts_make_the_moe_output(pair):
    """``hook_shared_expert_out`` is HF's ``shared_experts`` output; with the opt-in per-slot outputs they sum to
    ``hook_mlp_out``; zeroing it equals zeroing the shared experts' down projection in HF."""
    model = pair.bridge
    model.set_opt_in("hook_expert_outputs", True)
    tokens = pair.tokens()
    seen = {}
    shared = pair.reference.model.layers[1].mlp.shared_experts
    handle = shared.register_forward_hook(lambda _m, _a, out: seen.__setitem__("out", out))
    try:
        pair.reference(tokens)
    finally:
        handle.remove()
    logits, cache = model.run_with_cache(tokens)
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    close(cache["blocks.1.mlp.hook_shared_expert_out"], seen["out"])
    assert cache["blocks.1.mlp.shared_expert.hook_pre"].shape == (*tokens.shape, 32)
    routed = cache["blocks.1.mlp.hook_expert_outputs"].sum(2)
    close(routed + cache["blocks.1.mlp.hook_shared_expert_out"], cache["mlp_out", 1])
    zeroed = model.run_with_hooks(
        tokens, fwd_hooks=[("blocks.1.mlp.hook_shared_expert_out", lambda t, hook: torch.zeros_like(t))]
    )
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[1].mlp.shared_experts.down_proj.weight.zero_()
    close(zeroed, surgery(tokens).logits, atol=1e-4)


def test_first_layers_are_dense_and_rotary_is_partial(pair):
    model = pair.bridge
    assert type(model.blocks[0].mlp).__name__ == "MLP" and type(model.blocks[1].mlp).__name__ == "MoE"
    assert "blocks.0.mlp.hook_pre" in model.hook_dict and "blocks.0.mlp.hook_router_logits" not in model.hook_dict
    assert model.cfg.rotary_dim == model.cfg.d_head // 2 == 8
    _, cache = model.run_with_cache(pair.tokens(), names_filter=lambda n: n.endswith(("q_normed", "rot_q")))
    for layer in range(2):
        rot, normed = cache["rot_q", layer], cache[f"blocks.{layer}.attn.hook_q_normed"]
        close(rot[..., 8:], normed[..., 8:])  # the second half of each head passes through
        assert not torch.allclose(rot[:, 1:, :, :8], normed[:, 1:, :, :8], atol=1e-3)
