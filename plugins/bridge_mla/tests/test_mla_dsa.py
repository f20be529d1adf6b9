"""DeepSeek Sparse Attention (DeepSeek-V3.2, GLM-MoE-DSA): the indexer's scores against a computation written here
from its modules, the chosen keys against HF's own indexer, patches at both against an HF model given the same
choice, GLM's shared layers, the seam's folding of the choice into the mask, left padding and generation."""

import copy

import pytest
import torch
import torch.nn.functional as F

from bridge.testing import examples_of, make_pair, save_tiny_model
from bridge.testing.reference import rotate
from bridge_mla import DeepseekV32Adapter, GlmMoeDsaAdapter, dsa

DSA = ["DeepseekV32ForCausalLM", "GlmMoeDsaForCausalLM"]
PATHS = ["native", "hooked"]


def close(got, expected, atol=1e-5):
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def indexer_outputs(model, tokens, **kwargs):
    """Each layer's indexer output (top-k key positions) when ``model`` (an HF model) runs on ``tokens``."""
    seen = {}
    handles = [
        layer.self_attn.indexer.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
        for i, layer in enumerate(model.model.layers)
        if layer.self_attn.indexer is not None
    ]
    try:
        with torch.no_grad():
            model(tokens, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def allowed(indices, offset=0):
    """Per query ``[b, q]``: the set of chosen key positions at or before it (the other slots are masked keys)."""
    b, q, _ = indices.shape
    return [
        [{k - offset for k in indices[i, j].tolist() if offset <= k <= j + offset} for j in range(q)] for i in range(b)
    ]


def index_scores_by_hand(model, layer, hidden, q_latent, interleaved):
    """The indexer's scores ``[b, q, k]`` written here from its modules: per head ``relu(q_h · k) / √d``, weighted by
    ``weights_proj(hidden) / √heads`` and summed, RoPE on the first ``qk_rope`` dims of q and k (halves or
    adjacent pairs), causally masked with -inf."""
    idx = model.hf_model.model.layers[layer].self_attn.indexer
    theta = model.hf_model.config.rope_parameters["rope_theta"]
    rope = idx.qk_rope_head_dim
    q = idx.wq_b(q_latent).unflatten(-1, (idx.n_heads, idx.head_dim))  # [b, p, h, d]
    k = idx.k_norm(idx.wk(hidden))  # [b, p, d]
    q = rotate(q, theta, rotary_dim=rope, interleaved=interleaved)
    k = rotate(k[:, :, None], theta, rotary_dim=rope, interleaved=interleaved)[:, :, 0]
    per_head = F.relu(torch.einsum("bqhd,bkd->bqhk", q, k) * idx.head_dim**-0.5)
    weights = idx.weights_proj(hidden) * idx.n_heads**-0.5  # [b, q, h]
    scores = torch.einsum("bqh,bqhk->bqk", weights, per_head)
    p = scores.shape[-1]
    return scores.masked_fill(~torch.ones(p, p, dtype=torch.bool).tril(), -torch.inf)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", DSA)
def test_index_scores_are_the_indexers_formula(pair_for, name, path):
    """``hook_index_scores`` ``[b, q, k]`` equals the indexer's scores computed here from the attention's input and the
    q latent; masked keys hold -inf (SDPA's boolean mask) or the dtype's minimum (eager's additive one)."""
    pair = pair_for(name, path)
    model = pair.bridge
    b, p = 2, 9
    names = lambda n: "index_scores" in n or "resid_pre" in n or "q_latent" in n  # noqa: E731
    _, cache = model.run_with_cache(pair.tokens(b, p), names_filter=names)
    interleaved = name == "GlmMoeDsaForCausalLM"
    layers = [i for i in range(model.cfg.n_layers) if f"blocks.{i}.attn.hook_index_scores" in cache]
    assert layers == ([0, 2] if interleaved else [0, 1])  # GLM's layer 1 reuses layer 0's choice
    causal = torch.ones(p, p, dtype=torch.bool).tril()
    for layer in layers:
        hidden = model.hf_model.model.layers[layer].input_layernorm(cache["resid_pre", layer])  # the attention's input
        expected = index_scores_by_hand(model, layer, hidden, cache[f"blocks.{layer}.attn.hook_q_latent"], interleaved)
        got = cache[f"blocks.{layer}.attn.hook_index_scores"]
        assert got.shape == (b, p, p)
        close(got[:, causal], expected[:, causal], atol=1e-4)
        assert (got[:, ~causal] <= torch.finfo(got.dtype).min).all()
        other = index_scores_by_hand(model, layer, hidden, cache[f"blocks.{layer}.attn.hook_q_latent"], not interleaved)
        assert not torch.allclose(got[:, causal], other[:, causal], atol=1e-3)  # the RoPE pairing matters


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", DSA)
def test_topk_indices_are_hf_indexers_choice_and_the_pattern_keeps_to_them(pair_for, name, path):
    """``hook_topk_indices`` ``[b, q, index_topk]`` is the HF reference's own indexer output (the chosen keys at or
    before each query; the remaining slots of an early query are masked keys); GLM's shared layer 1 uses layer 0's
    choice. The pattern is zero on every key not chosen."""
    pair = pair_for(name, path)
    model = pair.bridge
    tokens = pair.tokens(2, 12)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: "topk" in n or "pattern" in n)
    hf_choice = indexer_outputs(pair.reference, tokens)
    k = model.cfg.extra["index_topk"]
    for layer in range(model.cfg.n_layers):
        got = cache[f"blocks.{layer}.attn.hook_topk_indices"]
        assert got.shape == (2, 12, k) and got.dtype == torch.int32
        source = layer if layer in hf_choice else layer - 1
        assert allowed(got) == allowed(hf_choice[source])
        assert torch.equal(got[:, k:], hf_choice[source][:, k:])  # from query k on every slot is a real key
        chosen = torch.zeros(2, 12, 12, dtype=torch.bool).scatter(-1, got.long(), True)
        pattern = cache["pattern", layer]
        assert (pattern.masked_select(~chosen[:, None].expand_as(pattern)) == 0).all()
        assert (pattern > 0).sum(-1).max() == k  # and at most index_topk keys are attended
    if name == "GlmMoeDsaForCausalLM":
        assert torch.equal(cache["blocks.1.attn.hook_topk_indices"], cache["blocks.0.attn.hook_topk_indices"])


def fixed_choice(b, p, k):
    """Each query's k nearest earlier keys (itself first; clipped at position 0): ``[b, p, k]`` int32."""
    positions = torch.arange(p)[:, None] - torch.arange(k)[None]
    return positions.clamp(min=0).to(torch.int32).expand(b, p, k).contiguous()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", DSA)
def test_patched_topk_indices_equal_hf_given_the_same_choice(pair_for, name, path):
    """Replacing layer 0's chosen keys (a sliding window of the 4 nearest) gives the logits of the HF model whose
    layer-0 indexer returns that choice (HF then masks the attention itself); in GLM, layer 1 reuses it too."""
    pair = pair_for(name, path)
    model = pair.bridge
    tokens = pair.tokens(2, 10)
    choice = fixed_choice(2, 10, model.cfg.extra["index_topk"])
    logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_topk_indices", lambda t, hook: choice)])
    reference = copy.deepcopy(pair.reference)
    reference.model.layers[0].self_attn.indexer.register_forward_hook(lambda m, a, out: choice)
    with torch.no_grad():
        close(logits, reference(tokens).logits, atol=1e-4)
        assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-3)


def test_glm_shared_layer_patch_reaches_that_layer(pair_for):
    """In GLM's shared layer 1, ``hook_topk_indices`` fires on the choice it receives: patching it equals an HF model
    whose layer-1 attention is handed that choice (layer 2 runs its own indexer, so it is unaffected)."""
    pair = pair_for("GlmMoeDsaForCausalLM")
    model = pair.bridge
    tokens = pair.tokens(2, 10)
    choice = fixed_choice(2, 10, model.cfg.extra["index_topk"])
    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_topk_indices", lambda t, hook: choice)]):
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: "topk" in n)
    assert not torch.equal(cache["blocks.0.attn.hook_topk_indices"], choice)
    reference = copy.deepcopy(pair.reference)

    def hand_over(module, args, kwargs):
        return args, {**kwargs, "prev_topk_indices": choice}

    reference.model.layers[1].self_attn.register_forward_pre_hook(hand_over, with_kwargs=True)
    with torch.no_grad():
        close(logits, reference(tokens).logits, atol=1e-4)
        assert not torch.allclose(logits, pair.reference(tokens).logits, atol=1e-3)


@pytest.mark.parametrize("name", DSA)
def test_patched_index_scores_reselect_the_keys(pair_for, name):
    """A bonus on key 0 at ``hook_index_scores`` puts key 0 among every query's chosen keys, and gives the logits
    that patching ``hook_topk_indices`` with the top-k of the patched scores gives."""
    pair = pair_for(name)
    model = pair.bridge
    tokens = pair.tokens(2, 10)
    _, clean = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_index_scores")

    def bonus(scores, hook):
        scores = scores.clone()
        scores[..., 0] += 100.0
        return scores

    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_index_scores", bonus)]):
        logits, patched = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_topk_indices")
    assert (patched["blocks.0.attn.hook_topk_indices"] == 0).any(-1).all()
    k = model.cfg.extra["index_topk"]
    expected_choice = bonus(clean["blocks.0.attn.hook_index_scores"], None).topk(k, dim=-1).indices.to(torch.int32)
    expected = model.run_with_hooks(
        tokens, fwd_hooks=[("blocks.0.attn.hook_topk_indices", lambda t, hook: expected_choice)]
    )
    close(logits, expected, atol=1e-5)
    assert not torch.allclose(logits, model(tokens), atol=1e-3)


@pytest.mark.parametrize("name", DSA)
def test_the_seam_folds_the_choice_into_the_mask(pair_for, name, monkeypatch):
    """Under the bridge, HF's attention sees the implementation ``"bridge"`` and hands its choice to the attention
    function; the seam folds it into the mask. Without that fold (planted here) the logits leave HF's."""
    pair = pair_for(name)
    model = pair.bridge
    tokens = pair.tokens(2, 12)
    assert model.hf_model.config._attn_implementation == "bridge"
    close(model(tokens), pair.reference(tokens).logits, atol=1e-4)
    monkeypatch.setattr(dsa, "fold_index_mask", lambda mask, indices, n_keys, dtype: mask)
    assert not torch.allclose(model(tokens), pair.reference(tokens).logits, atol=1e-3)


@pytest.mark.parametrize("name", DSA)
def test_left_padding_shifts_the_chosen_keys_and_keeps_the_scores(pair_for, name):
    """In a left-padded batch each sequence's index scores over its real keys are those it has alone, and its chosen
    real keys are the same keys, at positions shifted by its padding."""
    pair = pair_for(name)
    model = pair.bridge
    rows = [pair.tokens(1, n, seed=20 + n)[0] for n in (9, 5)]
    width = 9
    tokens = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, width - len(row) :], mask[i, width - len(row) :] = row, 1
    names = lambda n: "index_scores" in n or "topk" in n  # noqa: E731
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=names)
    for i, row in enumerate(rows):
        _, alone = model.run_with_cache(row[None], names_filter=names)
        pad = width - len(row)
        for name in alone:
            if name.endswith("hook_index_scores"):
                causal = torch.ones(len(row), len(row), dtype=torch.bool).tril()
                close(cache[name][i, pad:, pad:][causal], alone[name][0][causal], atol=1e-5)
            else:
                assert allowed(cache[name][i : i + 1, pad:], offset=pad) == allowed(alone[name])


@pytest.mark.parametrize("name", DSA)
def test_generation_chooses_the_keys_a_full_forward_chooses(pair_for, name):
    """Each cached generation step's chosen keys (the indexer's key cache holds the earlier keys) are those a
    cache-free forward over the output chooses for that position, and its index scores equal that forward's row."""
    pair = pair_for(name)
    model = pair.bridge
    names = ["blocks.0.attn.hook_topk_indices", "blocks.0.attn.hook_index_scores"]
    tokens, steps = model.generate(
        pair.tokens(2, 6, seed=7),
        max_new_tokens=4,
        do_sample=False,
        stop_at_eos=False,
        verbose=False,
        names_filter=names,
    )
    _, full = model.run_with_cache(tokens[:, :-1], names_filter=names)
    for t, step in enumerate(steps[1:], start=6):
        chosen = step["blocks.0.attn.hook_topk_indices"]  # [b, 1, topk]: the new position's choice
        assert [set(row[0].tolist()) for row in chosen] == [set(row[t].tolist()) for row in full[names[0]]]
        close(step[names[1]][:, 0], full[names[1]][:, t, : t + 1], atol=1e-4)


def test_short_prompts_keep_every_key(tmp_path):
    """With ``index_topk`` above the prompt's length (DeepSeek-V3.2-Exp's 2048 on shorter prompts) the indexer keeps
    every earlier key: the pattern is the dense MLA one, the logits HF's."""
    config = examples_of(DeepseekV32Adapter).example_config(index_topk=64)
    pair = make_pair(DeepseekV32Adapter, directory=save_tiny_model(config, tmp_path), path="hooked")
    model = pair.bridge
    tokens = pair.tokens(2, 9)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: "topk" in n or "pattern" in n)
    close(logits, pair.reference(tokens).logits, atol=1e-4)
    assert cache["blocks.0.attn.hook_topk_indices"].shape == (2, 9, 9)
    assert (cache["pattern", 1] > 0).sum(-1).tolist() == [[list(range(1, 10))] * 4] * 2


def test_glm_layer_kinds_follow_indexer_types(pair_for):
    """GLM-MoE-DSA's ``cfg.extra["indexer_types"]`` says which layers run an indexer; those have
    ``hook_index_scores``, the shared ones only ``hook_topk_indices``."""
    model = pair_for("GlmMoeDsaForCausalLM").bridge
    kinds = model.cfg.extra["indexer_types"]
    assert kinds == ["full", "shared", "full"]
    for layer, kind in enumerate(kinds):
        assert (f"blocks.{layer}.attn.hook_index_scores" in model.hook_dict) == (kind == "full")
        assert f"blocks.{layer}.attn.hook_topk_indices" in model.hook_dict
    assert isinstance(model.blocks[0], GlmMoeDsaAdapter.wiring)
