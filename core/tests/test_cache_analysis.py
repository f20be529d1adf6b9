"""Cache analysis on GPT-2 (LayerNorm, learned positions), checked against identities and HF's own outputs.

References are independent of the analysis code: HF ``hidden_states`` and logits, torch hooks on the HF
attention and MLP modules, ``torch.nn.functional.layer_norm``, and hand-folded weights.
"""

import ast
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from public_api_adapters import GPT2Adapter
from torch import nn

import bridge
from bridge.analysis.cache_analysis import MissingActivationError
from bridge.kernel.errors import BridgeError, HookNameError
from bridge.kernel.slicing import Slice
from bridge.model import ActivationCache
from bridge.testing import make_pair

ATOL = 1e-5


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_pair(GPT2Adapter, directory=tmp_path_factory.mktemp("gpt2-cache"))


@pytest.fixture(scope="module")
def tokens(pair):
    return pair.tokens(2, 7)


@pytest.fixture(scope="module")
def run(pair, tokens):
    """Logits and a cache of every hook, plus HF's own hidden states and logits."""
    logits, cache = pair.bridge.run_with_cache(tokens)
    ref = pair.reference(tokens, output_hidden_states=True)
    return logits, cache, ref


def close(actual, expected, atol=ATOL):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def hf_sublayer_outputs(pair, tokens):
    """What each HF attention and MLP module returns, caught with plain torch hooks."""
    outputs, handles = {}, []
    for l, block in enumerate(pair.reference.transformer.h):
        for name, module in (("attn", block.attn), ("mlp", block.mlp)):

            def keep(_m, _args, out, key=(name, l)):
                outputs[key] = out[0] if isinstance(out, tuple) else out

            handles.append(module.register_forward_hook(keep))
    try:
        pair.reference(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


# ------------------------------------------------------------------ residual stacks


def test_accumulated_resid_entries_are_hf_hidden_states(pair, run):
    _, cache, ref = run
    n = pair.bridge.cfg.n_layers
    stack, labels = cache.accumulated_resid(return_labels=True)
    assert labels == [*(f"{l}_pre" for l in range(n)), "final_post"]
    for l in range(n):
        close(stack[l], ref.hidden_states[l])
    close(stack[n], cache["blocks.1.hook_resid_post"])
    mid_stack, mid_labels = cache.accumulated_resid(layer=1, incl_mid=True, mlp_input=True, return_labels=True)
    assert mid_labels == ["0_pre", "0_mid", "1_pre", "1_mid"]
    close(mid_stack[1], cache["blocks.0.hook_resid_mid"])
    close(mid_stack[3], cache["blocks.1.hook_resid_mid"])


def test_logit_lens_runs_the_final_norm_on_each_entry(pair, run):
    """The logit lens: every entry through ln_f (its own statistics, ln_f's weight and bias), so the last
    entry unembeds to HF's logits."""
    _, cache, ref = run
    raw, lens = cache.accumulated_resid(), cache.accumulated_resid(apply_ln=True)
    ln_f = pair.reference.transformer.ln_f
    close(lens, F.layer_norm(raw, (raw.shape[-1],), ln_f.weight, ln_f.bias, eps=ln_f.eps))
    close(lens[-1] @ pair.bridge.W_U + pair.bridge.b_U, ref.logits, atol=1e-4)


def test_cached_scale_lens_is_normalized_not_scaled(pair, run):
    """apply_ln_to_stack divides by the cached ln_f scale and applies no weight: ln_f's weight and bias, then
    the unembedding, give HF's logits from the last residual stream."""
    _, cache, ref = run
    normalized = cache.apply_ln_to_stack(cache.accumulated_resid()[-1:])[0]
    ln_f = pair.reference.transformer.ln_f
    close((normalized * ln_f.weight + ln_f.bias) @ pair.bridge.W_U + pair.bridge.b_U, ref.logits, atol=1e-4)


@pytest.mark.parametrize("layer", [None, 0, 1, 2, -1, -2])
@pytest.mark.parametrize("mode", ["all", "attn", "mlp"])
def test_decompose_resid_sums_to_the_stream(pair, run, layer, mode):
    _, cache, ref = run
    n = pair.bridge.cfg.n_layers
    index = n if layer is None else layer % (n + 1)
    stack, labels = cache.decompose_resid(layer, mode=mode, return_labels=True)
    assert labels[:2] == ["embed", "pos_embed"]
    expected = [*(f"{l}_{w}" for l in range(index) for w in ("attn_out", "mlp_out") if mode in ("all", w[:-4]))]
    assert labels[2:] == expected
    if mode == "all":
        stream = ref.hidden_states[index] if index < n else cache["resid_post", -1]
        close(stack.sum(0), stream)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 9), pad=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_identities_hold_for_any_batch_length_and_left_padding(pair, batch, length, pad, seed):
    """Full decomposition = final stream, and the logit lens (weights re-applied) = HF logits, padded or not."""
    tokens = pair.tokens(batch, length, seed=seed)
    mask = torch.ones_like(tokens)
    mask[0, : min(pad, length - 1)] = 0  # left padding on the first row; at least one real token
    logits, cache = pair.bridge.run_with_cache(tokens, attention_mask=mask)
    ref = pair.reference(tokens, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    close(cache.get_full_resid_decomposition().sum(0), cache["resid_post", -1])
    lens = cache.accumulated_resid(apply_ln=True)[-1]
    real = mask.bool()
    close((lens @ pair.bridge.W_U + pair.bridge.b_U)[real], ref.logits[real], atol=1e-4)
    close(logits[real], ref.logits[real], atol=1e-4)


def test_decompose_resid_mlp_input_adds_the_current_attention(run):
    _, cache, _ = run
    stack, labels = cache.decompose_resid(1, mlp_input=True, return_labels=True)
    assert labels[-1] == "1_attn_out"
    close(stack.sum(0), cache["resid_mid", 1])


@pytest.mark.parametrize("expand_neurons", [True, False])
@pytest.mark.parametrize(("layer", "mlp_input"), [(None, False), (0, False), (1, False), (1, True), (0, True)])
def test_full_decomposition_sums_to_the_stream(pair, run, layer, mlp_input, expand_neurons):
    """Heads (z @ W_O), neurons (post · W_out), embeddings and the accumulated biases add up exactly."""
    _, cache, ref = run
    n, n_heads, d_mlp = pair.bridge.cfg.n_layers, pair.bridge.cfg.n_heads, pair.bridge.cfg.d_mlp
    stack, labels = cache.get_full_resid_decomposition(
        layer, mlp_input=mlp_input, expand_neurons=expand_neurons, return_labels=True
    )
    index = n if layer is None else layer
    head_layers = index + (1 if mlp_input else 0)
    neurons = [f"L{l}N{k}" for l in range(index) for k in range(d_mlp)] if expand_neurons else []
    mlps = [] if expand_neurons else [f"{l}_mlp_out" for l in range(index)]
    heads = [f"L{l}H{h}" for l in range(head_layers) for h in range(n_heads)]
    assert labels == [*heads, *neurons, *mlps, "embed", "pos_embed", "bias"]
    assert stack.shape == (len(labels), *cache["embed"].shape)
    if layer is None:
        expected = cache["resid_post", -1]
    elif mlp_input:
        expected = cache["resid_mid", index]
    else:
        expected = ref.hidden_states[index]
    close(stack.sum(0), expected)


def test_head_and_neuron_results_add_up_to_hf_sublayer_outputs(pair, tokens, run):
    _, cache, _ = run
    hf = hf_sublayer_outputs(pair, tokens)
    heads = cache.stack_head_results(layer=2)  # [2·n_heads, b, p, d]
    neurons = cache.stack_neuron_results(layer=2)  # [2·d_mlp, b, p, d]
    n_heads, d_mlp = pair.bridge.cfg.n_heads, pair.bridge.cfg.d_mlp
    for l in range(2):
        attn = pair.reference.transformer.h[l].attn
        mlp = pair.reference.transformer.h[l].mlp
        close(heads[l * n_heads : (l + 1) * n_heads].sum(0) + attn.c_proj.bias, hf["attn", l])
        close(neurons[l * d_mlp : (l + 1) * d_mlp].sum(0) + mlp.c_proj.bias, hf["mlp", l])
        one = cache.get_neuron_results(l, neuron_slice=[3, 5])
        assert one.shape == (*cache["embed"].shape[:-1], 2, pair.bridge.cfg.d_model)
        close(one, neurons[[l * d_mlp + 3, l * d_mlp + 5]].movedim(0, -2))


@pytest.mark.parametrize(("neuron_slice", "kept"), [(3, [3]), ((2, 5), [2, 3, 4]), ([7, 1], [7, 1])])
def test_neuron_slices_pick_neurons_and_labels(pair, run, neuron_slice, kept):
    _, cache, _ = run
    d_mlp = pair.bridge.cfg.d_mlp
    everything = cache.stack_neuron_results(2)
    stack, labels = cache.stack_neuron_results(2, neuron_slice=neuron_slice, return_labels=True)
    assert labels == [f"L{l}N{n}" for l in range(2) for n in kept]
    close(stack, everything[[l * d_mlp + n for l in range(2) for n in kept]])


def test_head_results_are_cached_with_tl_shapes(pair, run):
    _, cache, _ = run
    fresh = ActivationCache(dict(cache.cache_dict), model=pair.bridge)
    fresh.cache_dict.pop("blocks.0.attn.hook_result", None)
    fresh.compute_head_results()
    result = fresh["result", 0]
    assert result.shape == (*fresh["z", 0].shape[:-1], pair.bridge.cfg.d_model)
    manual = torch.einsum("bphd,hdm->bphm", fresh["z", 0], pair.bridge.blocks[0].attn.W_O)
    close(result, manual)


@pytest.mark.parametrize("method", ["stack_head_results", "stack_neuron_results"])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_remainder_completes_the_stream(pair, run, method, layer):
    _, cache, ref = run
    stack, labels = getattr(cache, method)(layer, incl_remainder=True, return_labels=True)
    assert labels[-1] == "remainder"
    close(stack.sum(0), ref.hidden_states[layer] if layer < 2 else cache["resid_post", 1])


def test_stack_activation(run):
    _, cache, _ = run
    close(cache.stack_activation("pattern"), torch.stack([cache["pattern", 0], cache["pattern", 1]]))
    close(cache.stack_activation("scale", 1, "ln2"), cache["blocks.0.ln2.hook_scale"][None])


# -------------------------------------------------------------- norms and logits


@pytest.mark.parametrize(("layer", "mlp_input"), [(None, False), (1, False), (1, True)])
def test_apply_ln_to_stack_sums_to_an_unweighted_layer_norm(pair, run, layer, mlp_input):
    """Normalizing each component with the cached scale is linear: the pieces sum to F.layer_norm of the whole."""
    _, cache, _ = run
    stack = cache.get_full_resid_decomposition(layer, mlp_input=mlp_input, expand_neurons=False)
    stream = stack.sum(0)
    eps = pair.reference.config.layer_norm_epsilon
    expected = F.layer_norm(stream, (stream.shape[-1],), eps=eps)
    close(cache.apply_ln_to_stack(stack, layer, mlp_input=mlp_input).sum(0), expected)
    applied = cache.get_full_resid_decomposition(layer, mlp_input=mlp_input, expand_neurons=False, apply_ln=True)
    close(applied.sum(0), expected)


def folded_final_norm(pair, tokenizer):
    """The reference HF model with ln_f folded into a new, untied, biased lm_head (weight surgery by hand)."""
    hf = type(pair.reference).from_pretrained(pair.reference.name_or_path).eval()
    ln_f, W = hf.transformer.ln_f, hf.lm_head.weight.detach()  # W [vocab, d]
    head = nn.Linear(W.shape[1], W.shape[0], bias=True)
    with torch.no_grad():
        head.weight.copy_(W * ln_f.weight)
        head.bias.copy_(W @ ln_f.bias)
        ln_f.weight.fill_(1.0)
        ln_f.bias.zero_()
    hf.lm_head = head
    return bridge.wrap(hf, tokenizer)


def test_logit_attrs_of_a_full_decomposition_sum_to_the_logit_difference(pair, tokens, run):
    logits, _, _ = run
    folded = folded_final_norm(pair, pair.bridge.tokenizer)
    folded_logits, cache = folded.run_with_cache(tokens)
    close(folded_logits, logits, atol=1e-4)  # the surgery keeps the function
    stack = cache.get_full_resid_decomposition()
    right, wrong = tokens[:, 1:2].expand_as(tokens), torch.full_like(tokens, 5)
    attrs = cache.logit_attrs(stack, right, incorrect_tokens=wrong)
    assert attrs.shape == stack.shape[:-1]
    b_U = folded.b_U.detach()
    diff = logits.gather(-1, right[..., None])[..., 0] - logits[..., 5]
    close(attrs.sum(0) + b_U[right] - b_U[5], diff, atol=1e-4)
    single = cache.logit_attrs(stack, 7)  # one token for every position
    close(single.sum(0) + b_U[7], logits[..., 7], atol=1e-4)


def test_logit_attrs_match_a_hand_computed_reference(pair, tokens, run):
    """Centered, divided by the final norm's scale recomputed here from the stream, dotted with W_U[:, t]."""
    _, cache, _ = run
    stack = cache.decompose_resid()
    stream = cache["resid_post", -1]
    eps = pair.reference.config.layer_norm_epsilon
    scale = (stream.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
    centered = stack - stack.mean(-1, keepdim=True)
    W_U = pair.reference.lm_head.weight.T
    expected = ((centered / scale) * W_U[:, 3]).sum(-1)
    close(cache.logit_attrs(stack, 3), expected)
    last = cache.logit_attrs(stack[:, :, -1], 3, pos_slice=-1)
    close(last, expected[:, :, -1])
    first_batch = cache.logit_attrs(stack, 3, batch_slice=0)
    close(first_batch, expected[:, 0])


def test_logit_attrs_with_one_token_per_batch_item_use_it_at_every_position(run):
    _, cache, _ = run
    stack = cache.decompose_resid()  # [n, batch=2, pos=7, d]
    per_item = cache.logit_attrs(stack, torch.tensor([3, 4]), incorrect_tokens=torch.tensor([5, 6]))
    spelled_out = cache.logit_attrs(
        stack, torch.tensor([[3] * 7, [4] * 7]), incorrect_tokens=torch.tensor([[5] * 7, [6] * 7])
    )
    close(per_item, spelled_out)


def test_logit_attrs_rejects_mismatched_token_shapes(run):
    _, cache, _ = run
    with pytest.raises(BridgeError, match="same shape"):
        cache.logit_attrs(cache.decompose_resid(), torch.tensor([1, 2]), incorrect_tokens=torch.tensor([1, 2, 3]))


def test_tokens_to_residual_directions(pair):
    model = pair.bridge
    W_U = pair.reference.lm_head.weight.T
    close(model.tokens_to_residual_directions(9), W_U[:, 9])
    close(model.tokens_to_residual_directions(torch.tensor([[9]])), W_U[:, 9])
    batch = torch.tensor([[1, 2, 3], [4, 5, 6]])
    directions = model.tokens_to_residual_directions(batch)
    assert directions.shape == (2, 3, model.cfg.d_model)
    close(directions[1, 2], W_U[:, 6])
    word = next(w for w in ("the", " the", "cat", " cat") if model.to_tokens(w, prepend_bos=False).numel() == 1)
    token = int(model.to_tokens(word, prepend_bos=False)[0, 0])
    close(model.tokens_to_residual_directions(word), W_U[:, token])
    with pytest.raises(BridgeError, match="not one"):
        model.tokens_to_residual_directions("The cat sat on the mat")
    with pytest.raises(BridgeError, match="must be in"):
        model.tokens_to_residual_directions(torch.tensor([1, 10_000]))


# ------------------------------------------------------------------- pos_slice

POS_SLICES = st.one_of(
    st.integers(-7, 6),
    st.tuples(st.integers(0, 3), st.integers(4, 7)),
    st.lists(st.integers(0, 6), min_size=1, max_size=4, unique=True),
)


def apply_pos(tensor, pos_slice, dim=-2):
    return Slice(pos_slice).apply(tensor, dim=dim)


@settings(max_examples=25, deadline=None)
@given(pos_slice=POS_SLICES)
def test_pos_slice_equals_slicing_the_full_result(run, pos_slice):
    _, cache, _ = run
    for method, kwargs in (
        ("accumulated_resid", {"apply_ln": True, "incl_mid": True}),
        ("decompose_resid", {"apply_ln": True, "mlp_input": True, "layer": 1}),
        ("get_full_resid_decomposition", {"apply_ln": True}),
        ("stack_head_results", {"incl_remainder": True, "apply_ln": True}),
        ("stack_neuron_results", {"layer": 1, "incl_remainder": True}),
    ):
        full = getattr(cache, method)(**kwargs)
        sliced = getattr(cache, method)(pos_slice=pos_slice, **kwargs)
        close(sliced, apply_pos(full, pos_slice), atol=1e-6)
    full_neurons = cache.get_neuron_results(0)
    close(cache.get_neuron_results(0, pos_slice=pos_slice), apply_pos(full_neurons, pos_slice, dim=-3))


@settings(max_examples=10, deadline=None)
@given(pos_slice=POS_SLICES)
def test_run_with_cache_pos_slice_slices_each_hook_on_its_position_dim(pair, tokens, run, pos_slice):
    _, full, _ = run
    _, sliced = pair.bridge.run_with_cache(tokens, pos_slice=pos_slice)
    assert len(sliced) > 20 and set(sliced) <= set(full)
    position_dims = {"hook_pattern": 2, "hook_attn_scores": 2}
    for name, value in sliced.items():
        dim = position_dims.get(name.rsplit(".", 1)[-1], 1)
        close(value, apply_pos(full[name], pos_slice, dim=dim), atol=0)


def test_run_with_cache_pos_slice_slices_gradients_too(pair, tokens):
    names = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z"]
    _, full = pair.bridge.run_with_cache(tokens, names_filter=names, incl_bwd=True, return_type="loss")
    _, last = pair.bridge.run_with_cache(tokens, names_filter=names, incl_bwd=True, return_type="loss", pos_slice=-1)
    for name in names:
        dim = 2 if name.endswith("pattern") else 1
        close(last[f"{name}_grad"], full[f"{name}_grad"].select(dim, -1), atol=1e-7)
        close(last[name], full[name].select(dim, -1), atol=0)
        assert last[name].untyped_storage().nbytes() < full[name].untyped_storage().nbytes()


def test_pos_sliced_cache_still_decomposes(pair, tokens, run):
    """A cache taken with pos_slice=-1 gives the last position of every analysis, with no pos_slice there."""
    _, full, _ = run
    _, last = pair.bridge.run_with_cache(tokens, pos_slice=-1)
    close(last.get_full_resid_decomposition(apply_ln=True), full.get_full_resid_decomposition(apply_ln=True)[:, :, -1])
    close(last.accumulated_resid(apply_ln=True), full.accumulated_resid(apply_ln=True)[:, :, -1])


def test_analysis_after_remove_batch_dim(pair, tokens):
    _, full = pair.bridge.run_with_cache(tokens[:1])
    _, single = pair.bridge.run_with_cache(tokens[:1], remove_batch_dim=True)
    close(single.get_full_resid_decomposition(apply_ln=True), full.get_full_resid_decomposition(apply_ln=True)[:, 0])
    close(single.logit_attrs(single.decompose_resid(), 4), full.logit_attrs(full.decompose_resid(), 4)[:, 0])
    first = full.apply_slice_to_batch_dim(0)
    assert not first.has_batch_dim
    close(first.accumulated_resid(apply_ln=True), single.accumulated_resid(apply_ln=True))


# ------------------------------------------------------- only the hooks you need

NEEDED = {
    "accumulated_resid": ("hook_resid_pre", "hook_resid_post", "ln_final.hook_scale"),
    "decompose_resid": ("hook_embed", "hook_pos_embed", "hook_attn_out", "hook_mlp_out", "ln_final.hook_scale"),
    "get_full_resid_decomposition": (
        "hook_embed",
        "hook_pos_embed",
        "attn.hook_z",
        "mlp.hook_post",
        "ln_final.hook_scale",
    ),
}


@pytest.mark.parametrize("method", sorted(NEEDED))
def test_works_with_only_the_needed_hooks(pair, tokens, run, method):
    _, full, _ = run
    _, small = pair.bridge.run_with_cache(tokens, names_filter=lambda name: name.endswith(NEEDED[method]))
    close(getattr(small, method)(apply_ln=True), getattr(full, method)(apply_ln=True))


def test_a_missing_hook_names_itself_and_the_filter_to_use(pair, tokens):
    _, small = pair.bridge.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_resid_pre"))
    with pytest.raises(MissingActivationError, match=r"'blocks\.1\.hook_resid_post'.*names_filter=lambda name"):
        small.accumulated_resid()
    assert small.accumulated_resid(layer=1).shape[0] == 2
    with pytest.raises(MissingActivationError, match=r"'blocks\.1\.ln1\.hook_scale'.*hook_scale"):
        small.accumulated_resid(layer=1, apply_ln=True)
    with pytest.raises(MissingActivationError, match=r"'blocks\.0\.attn\.hook_z'.*hook_z"):
        small.stack_head_results()
    assert isinstance(MissingActivationError("x"), KeyError)


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("accumulated_resid", {"apply_ln": True, "incl_mid": True}),
        ("decompose_resid", {"apply_ln": True, "layer": 1, "mlp_input": True}),
        ("stack_head_results", {"apply_ln": True, "incl_remainder": True}),
        ("stack_neuron_results", {"layer": 2, "apply_ln": True, "incl_remainder": True}),
        ("get_full_resid_decomposition", {"apply_ln": True}),
        ("get_full_resid_decomposition", {"apply_ln": True, "expand_neurons": False}),
    ],
)
def test_the_suggested_names_filter_is_enough(pair, tokens, run, method, kwargs):
    """Start from a cache of one unrelated hook; the filter the error suggests makes the call work."""
    _, full, _ = run
    _, small = pair.bridge.run_with_cache(tokens, names_filter="blocks.0.attn.hook_q")
    with pytest.raises(MissingActivationError) as info:
        getattr(small, method)(**kwargs)
    suffixes = ast.literal_eval(re.search(r"name\.endswith\((\(.*?\))\)", str(info.value)).group(1))
    assert method in str(info.value)
    _, enough = pair.bridge.run_with_cache(tokens, names_filter=lambda name: name.endswith(suffixes))
    close(getattr(enough, method)(**kwargs), getattr(full, method)(**kwargs))


def test_a_cache_without_a_model_says_so(run):
    _, cache, _ = run
    bare = ActivationCache(dict(cache.cache_dict), n_layers=2)
    with pytest.raises(BridgeError, match="has no model"):
        bare.decompose_resid()


def test_layer_arguments_are_checked(run):
    _, cache, _ = run
    with pytest.raises(BridgeError, match=r"out of range.*0\.\.2"):
        cache.accumulated_resid(layer=3)
    with pytest.raises(BridgeError, match=r"out of range"):
        cache.decompose_resid(layer=-4)
    with pytest.raises(BridgeError, match="mlp_input"):
        cache.decompose_resid(mlp_input=True)
    with pytest.raises(BridgeError, match="2 blocks"):
        cache.get_neuron_results(2)
    with pytest.raises(BridgeError, match="mode"):
        cache.decompose_resid(mode="heads")
    close(cache.get_neuron_results(-1), cache.get_neuron_results(1))


# ------------------------------------------------------------------ cache keys


def test_short_keys_without_a_layer_answer_instead_of_raising(run):
    _, cache, _ = run
    assert "resid_post" not in cache
    assert cache.get("resid_post") is None
    assert 5 not in cache
    assert ("resid_post", 2) not in cache
    assert cache.get(("resid_post", -3), "missing") == "missing"
    assert ("resid_post", 1) in cache and "embed" in cache
    with pytest.raises(HookNameError, match="needs a layer"):
        cache["resid_post"]


def test_negative_layers_resolve_and_out_of_range_layers_say_the_range(run):
    _, cache, _ = run
    close(cache["resid_post", -1], cache["blocks.1.hook_resid_post"], atol=0)
    close(cache["z", -2, "attn"], cache["blocks.0.attn.hook_z"], atol=0)
    with pytest.raises(KeyError, match=r"layer -7 .* out of range.*2 layers.*-2 to 1") as info:
        cache["resid_post", -7]
    assert "blocks.-" not in str(info.value)
    with pytest.raises(KeyError, match="out of range"):
        cache["resid_post", 2]


def test_tl_sublayer_aliases(run):
    _, cache, _ = run
    close(cache["post", 0, "m"], cache["blocks.0.mlp.hook_post"], atol=0)
    close(cache["query", 1, "a"], cache["blocks.1.attn.hook_q"], atol=0)
    close(cache["resid_pre", 0, "b"], cache["blocks.0.hook_resid_pre"], atol=0)


def test_cache_dict_to_and_tl_constructor_order(pair, run):
    _, cache, _ = run
    assert cache.cache_dict is cache._acts
    tl_style = ActivationCache(dict(cache.cache_dict), pair.bridge)
    assert tl_style.model is pair.bridge and tl_style.n_layers == 2
    moved = tl_style.to("cpu")
    assert moved is tl_style and moved["embed"].device.type == "cpu"


# ---------------------------------------------------------------------- Slice


def test_slice_forms():
    x = torch.arange(24).reshape(2, 6, 2)
    close(Slice(None).apply(x, 1), x, atol=0)
    close(Slice(-1).apply(x, 1), x[:, -1], atol=0)
    close(Slice((1, 4)).apply(x, 1), x[:, 1:4], atol=0)
    close(Slice((0, 6, 2)).apply(x, 1), x[:, 0:6:2], atol=0)
    close(Slice(slice(2, None)).apply(x, -2), x[:, 2:], atol=0)
    close(Slice([4, 0]).apply(x, 1), x[:, [4, 0]], atol=0)
    close(Slice(torch.tensor([1, 3])).apply(x, 1), x[:, [1, 3]], atol=0)
    assert Slice((1, 4)).indices(6).tolist() == [1, 2, 3]
    assert Slice(2).indices().tolist() == [2]
    assert Slice.unwrap(Slice(3)).slice == 3
    for bad in (1.5, "last", [[1, 2]], [0.5]):
        with pytest.raises(BridgeError):
            Slice(bad)


def test_block_layout_refuses_sums_without_a_residual_state():
    """A wiring whose sums hold no earlier residual state (it carries a transform of the stream on, as MiniMax's
    scaled norm outputs) has no decomposition into writes: the analysis says so instead of summing wrong terms."""
    from torch import nn

    from bridge.analysis.residual import AnalysisError, block_layout
    from bridge.kernel.components import SequentialBlock

    class SkipBlock(SequentialBlock):
        algebra = (
            ("hook_resid_mid", ("hook_skip_pre", "hook_attn_out")),
            ("hook_resid_post", ("hook_skip_mid", "hook_mlp_out")),
        )

    block = SkipBlock.__new__(SkipBlock)
    nn.Module.__init__(block)  # the layout reads the class's algebra only
    with pytest.raises(AnalysisError, match="hook_resid_mid as hook_skip_pre \\+ hook_attn_out: no earlier residual"):
        block_layout(block, 3)
