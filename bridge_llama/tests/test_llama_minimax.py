"""MiniMax: lightning attention's hooks against a hand-written recurrence and HF's own modules, its recurrent state
against HF decoding one token at a time, state patches against HF decoding on from a cache holding the patched
state, generation (every hook every step, the state at each step equal to the full run's), the scaled skip blocks,
and what the cache analysis and weight processing refuse."""

from typing import Any, ClassVar

import einops
import pytest
import torch
import torch.nn.functional as F

from bridge.analysis.norm_readers import WeightProcessingError
from bridge.analysis.residual import AnalysisError
from bridge.testing import make_pair
from bridge.testing.generation import left_padded, lively_pair
from bridge_llama import MiniMaxAdapter
from bridge_llama.examples import MiniMaxExamples

STATE = "hook_recurrent_state"


class AttentionFirstExamples(MiniMaxExamples):
    example_options: ClassVar[dict[str, Any]] = {
        **MiniMaxExamples.example_options,
        "layer_types": ["full_attention", "linear_attention", "linear_attention"],
    }


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_pair(MiniMaxAdapter, directory=tmp_path_factory.mktemp("minimax"))


@pytest.fixture(scope="module")
def lively(tmp_path_factory):
    return lively_pair(MiniMaxExamples, tmp_path_factory.mktemp("minimax-lively"), "MiniMaxForCausalLM", init=0.5)


def linear_layers(model):
    return [i for i, kind in enumerate(model.cfg.layer_types) if kind == "lightning_attention"]


def hf_cache(model):
    module = __import__(type(model).__module__, fromlist=["MiniMaxCache"])
    return module.MiniMaxCache()


def test_layer_kinds_from_the_config(pair):
    model = pair.bridge
    assert model.cfg.layer_types == ["lightning_attention", "attention", "lightning_attention"]
    for layer, kind in enumerate(model.cfg.layer_types):
        names = {n.split(".", 2)[2] for n in model.hook_dict if n.startswith(f"blocks.{layer}.")}
        linear = kind == "lightning_attention"
        assert ("linear_attn.hook_q" in names) == linear and ("attn.hook_pattern" in names) == (not linear)
        assert ("hook_mixer_out" in names) == linear and ("hook_attn_out" in names) == (not linear)
        assert {"hook_skip_pre", "hook_skip_mid", "mlp.hook_router_logits"} <= names


def test_lightning_hooks_against_a_hand_written_recurrence(pair):
    """q, k, v are SiLU(qkv_proj(x)) split per head as [q | k | v]; ``o_t = Σ_{s≤t} λ^{t-s} (q_t · k_s) v_s`` with
    ``λ = exp(-slope)`` (HF's buffer); ``hook_inner_norm = sigmoid(output_gate(x)) · norm(o)`` with HF's norm."""
    model = pair.bridge
    tokens = pair.tokens(2, 11)  # 11 positions: three of HF's 4-position blocks, the last one partial
    _, cache = model.run_with_cache(tokens)
    for layer in linear_layers(model):
        hf = pair.reference.model.layers[layer].self_attn
        base = f"blocks.{layer}.linear_attn."
        x = cache[base + "hook_in"].double()
        w = hf.qkv_proj.weight.double()
        qkv = einops.rearrange(F.silu(x @ w.T), "b p (h three d) -> three b p h d", three=3, h=hf.num_attention_heads)
        for i, name in enumerate("qkv"):
            torch.testing.assert_close(cache[base + f"hook_{name}"].double(), qkv[i], atol=1e-5, rtol=0)
        q, k, v = qkv
        positions = torch.arange(tokens.shape[1], dtype=torch.float64)
        lag = positions[:, None] - positions[None, :]  # [t, s]
        decay = torch.exp(-hf.slope_rate.double().view(-1, 1, 1) * lag).tril()  # [h, t, s], 0 above the diagonal
        scores = einops.einsum(q, k, "b t h d, b s h d -> b h t s") * decay
        o = einops.einsum(scores, v, "b h t s, b s h d -> b t h d")
        torch.testing.assert_close(cache[base + "hook_recurrence_out"].double(), o, atol=1e-4, rtol=1e-5)
        gate = cache[base + "hook_gate_input"]
        torch.testing.assert_close(gate.flatten(2), hf.output_gate(cache[base + "hook_in"]), atol=1e-6, rtol=0)
        normed = hf.norm(cache[base + "hook_recurrence_out"].flatten(2))
        expected = torch.sigmoid(gate.flatten(2)) * normed
        torch.testing.assert_close(cache[base + "hook_inner_norm"].flatten(2), expected, atol=1e-6, rtol=0)


def test_skip_scales_reach_their_hooks(pair):
    """``skip_pre = α₁ ln1(resid_pre)``, ``skip_mid = α₂ ln2(resid_mid)`` with the HF layer's factors and norms."""
    model = pair.bridge
    _, cache = model.run_with_cache(pair.tokens(2, 7))
    for layer, block in enumerate(pair.reference.model.layers):
        name = f"blocks.{layer}."
        pre, mid = cache[name + "hook_resid_pre"], cache[name + "hook_resid_mid"]
        expected = block.input_layernorm(pre) * block.attn_alpha_factor
        torch.testing.assert_close(cache[name + "hook_skip_pre"], expected, atol=1e-5, rtol=0)
        expected = block.post_attention_layernorm(mid) * block.mlp_alpha_factor
        torch.testing.assert_close(cache[name + "hook_skip_mid"], expected, atol=1e-5, rtol=0)


def test_states_equal_hf_decoding_one_token_at_a_time(pair):
    """``hook_recurrent_state`` at position t equals the state HF's cache holds after decoding tokens 0..t one at a
    time (HF's recurrent rule); at the last position also the state HF's blockwise prompt path leaves."""
    model, ref = pair.bridge, pair.reference
    tokens = pair.tokens(2, 9)
    model.set_opt_in(STATE, True)
    try:
        logits, cache = model.run_with_cache(tokens)
    finally:
        model.set_opt_in(STATE, False)
    torch.testing.assert_close(logits, pair.reference_output(tokens), atol=1e-4, rtol=0)
    step_cache = hf_cache(ref)
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            ref(tokens[:, t : t + 1], past_key_values=step_cache, use_cache=True, position_ids=torch.tensor([[t]]))
            for layer in linear_layers(model):
                got = cache[f"blocks.{layer}.linear_attn.{STATE}"][:, t]
                torch.testing.assert_close(got, step_cache.linear_cache[layer], atol=1e-5, rtol=1e-5)
        prompt_cache = hf_cache(ref)
        ref(tokens, past_key_values=prompt_cache, use_cache=True)
    for layer in linear_layers(model):
        got = cache[f"blocks.{layer}.linear_attn.{STATE}"][:, -1]
        torch.testing.assert_close(got, prompt_cache.linear_cache[layer], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", [0, 2])
def test_setting_a_state_equals_hf_decoding_from_it(pair, layer):
    """Setting layer ``layer``'s state at position t to ``S'`` gives, at positions t.., the logits of HF decoding
    tokens t.. from a cache whose state before t is ``(S' - k_tᵀ v_t) / λ`` (so that HF's own step reaches ``S'``)."""
    model, ref = pair.bridge, pair.reference
    tokens, t = pair.tokens(1, 9), 4
    name = f"blocks.{layer}.linear_attn.{STATE}"
    patched = torch.randn(
        model.cfg.n_heads, model.cfg.d_head, model.cfg.d_head, generator=torch.Generator().manual_seed(0)
    )

    def set_state(states, hook):
        states[:, t] = patched
        return states

    model.set_opt_in(STATE, True)
    try:
        kv = ("linear_attn.hook_k", "linear_attn.hook_v")
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(kv))
        got = model.run_with_hooks(tokens, fwd_hooks=[(name, set_state)])
    finally:
        model.set_opt_in(STATE, False)
    hf_attn = ref.model.layers[layer].self_attn
    k = cache[f"blocks.{layer}.linear_attn.hook_k"][0, t]  # [h, d]: does not depend on the state
    v = cache[f"blocks.{layer}.linear_attn.hook_v"][0, t]
    before = (patched - einops.einsum(k, v, "h dk, h dv -> h dk dv")) / torch.exp(-hf_attn.slope_rate)
    step_cache = hf_cache(ref)
    expected = []
    with torch.no_grad():
        ref(tokens[:, :t], past_key_values=step_cache, use_cache=True)
        step_cache.linear_cache[layer] = before[None]
        for s in range(t, tokens.shape[1]):
            out = ref(
                tokens[:, s : s + 1], past_key_values=step_cache, use_cache=True, position_ids=torch.tensor([[s]])
            )
            expected.append(out.logits)
    expected = torch.cat(expected, dim=1)
    scale = expected.abs().max().item()
    torch.testing.assert_close(got[:, t:], expected, atol=1e-5 * max(1.0, scale), rtol=0)
    assert (got[:, t:] - pair.reference_output(tokens)[:, t:]).abs().max() > 1e-2  # the patch mattered
    torch.testing.assert_close(got[:, :t], pair.reference_output(tokens)[:, :t], atol=1e-4, rtol=0)


def test_state_gradient_is_the_total_one(pair):
    """A backward hook on ``hook_recurrent_state`` receives dL/dS_t through every later state: equal to autograd
    through a hand-written recurrence from the cached q, k, v of the last lightning layer."""
    model = pair.bridge
    tokens = pair.tokens(1, 7)
    layer = linear_layers(model)[-1]
    name = f"blocks.{layer}.linear_attn.{STATE}"
    grads = {}
    model.set_opt_in(STATE, True)
    try:
        out = model.run_with_hooks(
            tokens, return_type="loss", bwd_hooks=[(name, lambda g, hook: grads.__setitem__("state", g))]
        )
        out.backward()
    finally:
        model.set_opt_in(STATE, False)
        model.hf_model.zero_grad(set_to_none=True)
    assert grads["state"].shape == (1, 7, model.cfg.n_heads, model.cfg.d_head, model.cfg.d_head)
    # dL/dS_T (the last state) only reaches the loss through o_T = q_T S_T: the gradient is q_T ⊗ dL/do_T
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith(f"blocks.{layer}.linear_attn."))
    o_grad = {}
    out = model.run_with_hooks(
        tokens,
        return_type="loss",
        bwd_hooks=[(f"blocks.{layer}.linear_attn.hook_recurrence_out", lambda g, hook: o_grad.__setitem__("o", g))],
    )
    out.backward()
    model.hf_model.zero_grad(set_to_none=True)
    q = cache[f"blocks.{layer}.linear_attn.hook_q"]
    last = einops.einsum(q[:, -1], o_grad["o"][:, -1], "b h dk, b h dv -> b h dk dv")
    torch.testing.assert_close(grads["state"][:, -1], last, atol=1e-6, rtol=1e-5)
    # and one step earlier: dL/dS_{T-1} = q_{T-1} ⊗ dL/do_{T-1} + λ dL/dS_T
    ratio = torch.exp(-pair.reference.model.layers[layer].self_attn.slope_rate)
    earlier = einops.einsum(q[:, -2], o_grad["o"][:, -2], "b h dk, b h dv -> b h dk dv") + ratio * last
    torch.testing.assert_close(grads["state"][:, -2], earlier, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("with_state", [True, False], ids=["with-state", "without-state"])
def test_generation_fires_every_lightning_hook_with_the_full_runs_values(lively, with_state):
    """Greedy generation with every lightning hook (the state included or not: the per-position recurrence or HF's
    decoding rule): each step fires them with ``[b, 1, …]`` shapes and the values of the same position in a full
    forward of the generated sequence (HF's blockwise prompt path). Tolerance 1e-4 of each tensor's magnitude: a
    one-position projection rounds apart from a many-position one (2e-6 on q of ~12 in layer 0), and this lively
    model's attention layer and α = 3.56 skips amplify that to ~1e-5 relative by layer 2."""
    model = lively.bridge
    prompt, new = lively.tokens(2, 6, seed=1), 4
    names = [n for n in model.hook_dict if ".linear_attn." in n and (with_state or not n.endswith(STATE))]
    model.set_opt_in(STATE, with_state)
    try:
        tokens, steps = model.generate(
            prompt, max_new_tokens=new, do_sample=False, stop_at_eos=False, verbose=False, names_filter=names
        )
        _, full = model.run_with_cache(tokens[:, :-1], names_filter=names)
    finally:
        model.set_opt_in(STATE, False)
    assert len(steps) == new
    for step, cache in enumerate(steps):
        assert set(cache) == set(names), f"step {step}"
        start = 0 if step == 0 else prompt.shape[1] + step - 1
        for name in names:
            got = cache[name]
            assert got.shape[1] == (prompt.shape[1] if step == 0 else 1), name
            expected = full[name][:, start : start + got.shape[1]]
            scale = max(1.0, expected.abs().max().item())
            torch.testing.assert_close(got, expected, atol=1e-4 * scale, rtol=0, msg=f"{name} at step {step}")


def test_hf_left_padded_decoding_is_wrong_when_layer_0_is_lightning(tmp_path):
    """HF's own behaviour, which the bridge inherits: ``MiniMaxCache.get_seq_length()`` reads layer 0, which holds no
    keys when it is a lightning layer, so it reports 0 after the prompt, and a left-padded batch decodes wrongly from
    the first cached step (a cache-free loop is right). With softmax attention in layer 0 the batch decodes as each
    prompt alone, through the bridge too."""
    for examples, broken in ((MiniMaxExamples, True), (AttentionFirstExamples, False)):
        lively = lively_pair(examples, tmp_path / examples.__name__, "MiniMaxForCausalLM", init=0.5)
        prompts = [lively.tokens(1, n, seed=10 + i)[0] for i, n in enumerate((7, 3, 5))]
        tokens, mask = left_padded(prompts)
        cache = hf_cache(lively.reference)
        with torch.no_grad():
            lively.reference(tokens, attention_mask=mask, past_key_values=cache, use_cache=True)
        assert (cache.get_seq_length() == 0) == broken
        batched = lively.bridge.generate(
            tokens, attention_mask=mask, max_new_tokens=6, do_sample=False, stop_at_eos=False, verbose=False
        )
        same = [
            torch.equal(
                batched[i, tokens.shape[1] - len(p) :],
                lively.bridge.generate(p, max_new_tokens=6, do_sample=False, stop_at_eos=False, verbose=False)[0],
            )
            for i, p in enumerate(prompts)
        ]
        assert all(same) != broken, same


def test_cache_analysis_and_fold_ln_refuse_with_the_reason(pair):
    model = pair.bridge
    _, cache = model.run_with_cache(pair.tokens(1, 5))
    with pytest.raises(AnalysisError, match="hook_skip_pre"):
        cache.decompose_resid()
    assert cache.accumulated_resid().shape[0] == model.cfg.n_layers + 1  # the states themselves are cached
    with pytest.raises(AnalysisError, match="no earlier residual state"):
        cache.stack_head_results()
    with pytest.raises(WeightProcessingError):
        model.process_weights(fold_ln=True)
    torch.testing.assert_close(model(pair.tokens(1, 5)), pair.reference_output(pair.tokens(1, 5)), atol=1e-4, rtol=0)


def test_unknown_layer_kind_is_refused(tmp_path):
    import bridge
    from bridge.kernel import ComponentMapError
    from bridge.testing import save_tiny_model

    config = MiniMaxExamples.example_config()
    save_tiny_model(config, tmp_path)
    config.layer_types = ["linear_attention", "sliding_attention", "linear_attention"]
    config.save_pretrained(tmp_path)
    with pytest.raises(ComponentMapError, match="sliding_attention"):
        bridge.load(tmp_path)
