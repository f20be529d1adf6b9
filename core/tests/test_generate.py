"""``Bridge.generate`` and incremental ``forward`` on a tiny GPT-2, against an independent HF
reference (same weights, eager attention): HF's own ``generate``, or loops written here that run
the reference without a KV cache."""

from collections import defaultdict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from public_api_adapters import GPT2Adapter
from transformers import DynamicCache, GPT2Model

import bridge
from bridge import BridgeError, HookNameError
from bridge.analysis.generation import FrequencyPenalty, StepCaches, _stack_hook
from bridge.kernel.errors import NoLMHeadError
from bridge.kernel.tiny import TINY_EOS_ID, TINY_PAD_ID
from bridge.testing import examples_of, make_pair
from bridge.testing.generation import (
    GENERATION_CHECKS,
    greedy_without_cache,
    left_padded,
    lively_pair,
    reference_block,
    steering,
)

EOS = TINY_EOS_ID  # the tiny tokenizer's <|endoftext|> (BOS and padding have ids of their own)


@pytest.fixture(scope="module")
def lively_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gpt2-lively")


@pytest.fixture
def pair(lively_dir):
    """The tiny GPT-2 with large weights: greedy continuations vary with the context."""
    return lively_pair(GPT2Adapter, lively_dir)


def quiet_generate(model, input, **kwargs):
    """Greedy, EOS off, no progress bar, unless overridden."""
    return model.generate(input, **{"do_sample": False, "stop_at_eos": False, "verbose": False, **kwargs})


# ------------------------------------------------------- incremental forward


@settings(max_examples=20, deadline=None)
@given(
    pads=st.lists(st.integers(0, 3), min_size=1, max_size=3),
    length=st.integers(2, 9),
    split=st.integers(1, 8),
    decode_rest_one_by_one=st.booleans(),
)
def test_incremental_forward_with_past_key_values_equals_a_full_forward(
    gpt2_dir, pads, length, split, decode_rest_one_by_one
):
    pair = make_pair(GPT2Adapter, directory=gpt2_dir)
    split = min(split, length - 1)
    generator = torch.Generator().manual_seed(length * 31 + split)
    tokens = torch.randint(1, 128, (len(pads), length), generator=generator)
    mask = torch.ones_like(tokens)
    for row, pad in enumerate(pads):  # left padding
        mask[row, :pad] = 0
        tokens[row, :pad] = TINY_PAD_ID
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    expected = pair.reference(tokens, attention_mask=mask, position_ids=positions).logits
    cache = DynamicCache(config=pair.bridge.hf_model.config)
    chunks = [(0, split)] + (
        [(i, i + 1) for i in range(split, length)] if decode_rest_one_by_one else [(split, length)]
    )
    got = torch.cat(
        [
            pair.bridge(tokens[:, a:b], attention_mask=mask[:, :b], past_key_values=cache, use_cache=True)
            for a, b in chunks
        ],
        dim=1,
    )
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


def test_incremental_forward_defaults_to_updating_the_cache_and_checks_the_mask(pair):
    tokens = pair.tokens(2, 7)
    cache = DynamicCache(config=pair.bridge.hf_model.config)
    first = pair.bridge(tokens[:, :4], past_key_values=cache)
    second = pair.bridge(tokens[:, 4:], past_key_values=cache)  # use_cache not passed
    assert cache.get_seq_length() == 7
    torch.testing.assert_close(torch.cat([first, second], 1), pair.reference(tokens).logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(BridgeError, match="must cover 9 positions"):
        pair.bridge(tokens[:, :2], attention_mask=torch.ones(2, 2, dtype=torch.long), past_key_values=cache)


# ---------------------------------------------------------------- generate


@pytest.mark.parametrize("check", GENERATION_CHECKS, ids=lambda c: c.__name__)
def test_generation_checks(pair, check):
    check(pair)


@settings(max_examples=12, deadline=None)
@given(lengths=st.lists(st.integers(1, 8), min_size=1, max_size=4), new=st.integers(1, 5), seed=st.integers(0, 99))
def test_left_padded_batches_generate_what_each_prompt_does_alone(lively_dir, lengths, new, seed):
    pair = lively_pair(GPT2Adapter, lively_dir)
    prompts = [pair.tokens(1, n, seed=seed + i)[0] for i, n in enumerate(lengths)]
    tokens, mask = left_padded(prompts)
    batched = quiet_generate(pair.bridge, tokens, attention_mask=mask, max_new_tokens=new)
    for prompt, row in zip(prompts, batched, strict=True):
        expected = greedy_without_cache(pair.reference, prompt[None], torch.ones_like(prompt[None]), new)
        torch.testing.assert_close(row[tokens.shape[1] - len(prompt) :], expected[0], rtol=0, atol=0)


@pytest.mark.parametrize("attach", ["fwd_hooks", "with hooks", "permanent"])
def test_every_way_of_adding_a_hook_steers_generation(pair, attach):
    prompt, vector = pair.tokens(2, 5, seed=4), 4 * torch.randn(pair.bridge.cfg.d_model)
    with steering(reference_block(pair, 0), vector):
        expected = greedy_without_cache(pair.reference, prompt, torch.ones_like(prompt), 6)
    name, add = "blocks.0.hook_resid_post", lambda t, hook: t + vector
    model = pair.bridge
    if attach == "fwd_hooks":
        got = quiet_generate(model, prompt, max_new_tokens=6, fwd_hooks=[(name, add)])
    elif attach == "with hooks":
        with model.hooks(fwd_hooks=[(name, add)]):
            got = quiet_generate(model, prompt, max_new_tokens=6)
    else:
        model.add_hook(name, add, is_permanent=True)
        got = quiet_generate(model, prompt, max_new_tokens=6)
        model.reset_hooks(including_permanent=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not any(h.active for h in model.hook_points())


@pytest.mark.parametrize("use_cache", [True, False])
def test_every_hook_fires_once_per_step_prompt_first(pair, use_cache):
    model, prompt, new = pair.bridge, pair.tokens(3, 5), 4
    seen: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    record = (lambda n: True, lambda t, hook: seen[hook.name].append(tuple(t.shape)))
    quiet_generate(model, prompt, max_new_tokens=new, use_past_kv_cache=use_cache, fwd_hooks=[record])
    assert set(seen) == {n for n, h in model.hook_dict.items() if h.enabled}
    for name, shapes in seen.items():
        assert len(shapes) == new, name
        if name.endswith(("hook_pattern", "hook_attn_scores")):  # [b, h, query, key]
            queries = [5] + [1 if use_cache else 5 + i for i in range(1, new)]
            assert [s[2:] for s in shapes] == [(q, 5 + i) for i, q in enumerate(queries)], name
        else:
            positions = [5] + [1 if use_cache else 5 + i for i in range(1, new)]
            assert [s[:2] for s in shapes] == [(3, p) for p in positions], name


@pytest.mark.parametrize("use_cache", [True, False])
def test_per_step_caches_hold_what_a_cache_free_forward_gives(pair, use_cache):
    model, prompt, new = pair.bridge, pair.tokens(2, 5, seed=5), 5
    names = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern", "blocks.0.attn.hook_pattern"]
    tokens, steps = quiet_generate(model, prompt, max_new_tokens=new, use_past_kv_cache=use_cache, names_filter=names)
    assert isinstance(steps, StepCaches) and len(steps) == new
    ref = pair.reference(tokens[:, :-1], output_hidden_states=True, output_attentions=True)
    for i, step in enumerate(steps):
        end = 5 + i  # positions seen once step i has run
        start = 0 if i == 0 or not use_cache else end - 1
        torch.testing.assert_close(step["resid_post", 0], ref.hidden_states[1][:, start:end], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(step["pattern", 1], ref.attentions[1][:, :, start:end, :end], atol=1e-5, rtol=1e-5)
    stacked = steps.stack()
    torch.testing.assert_close(stacked["resid_post", 0], ref.hidden_states[1], atol=1e-5, rtol=1e-5)
    for layer in (0, 1):
        torch.testing.assert_close(stacked["pattern", layer], ref.attentions[layer], atol=1e-5, rtol=1e-5)


def test_per_step_caches_record_the_steered_activations(pair):
    vector = torch.randn(pair.bridge.cfg.d_model)
    name = "blocks.0.hook_resid_post"
    _, steps = quiet_generate(
        pair.bridge,
        pair.tokens(1, 4),
        max_new_tokens=3,
        fwd_hooks=[(name, lambda t, hook: t + vector)],
        names_filter=name,
    )
    tokens = quiet_generate(
        pair.bridge, pair.tokens(1, 4), max_new_tokens=3, fwd_hooks=[(name, lambda t, hook: t + vector)]
    )
    with steering(reference_block(pair, 0), vector):
        hidden = pair.reference(tokens[:, :-1], output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(steps.stack()[name], hidden, atol=1e-5, rtol=1e-5)


def test_stacking_rules_on_synthetic_steps():
    b, h, p = 2, 3, 4
    per_position = [torch.randn(b, p, 5)] + [torch.randn(b, 1, 5) for _ in range(2)]
    torch.testing.assert_close(_stack_hook("x.hook_z", per_position), torch.cat(per_position, 1))
    whole = [torch.randn(b, p + i, h, 5) for i in range(3)]  # e.g. hook_rot_k with a KV cache
    assert _stack_hook("blocks.0.attn.hook_rot_k", whole) is whole[-1]
    scores = [torch.randn(b, h, p, p), torch.randn(b, h, 1, p + 1)]
    stacked = _stack_hook("blocks.0.attn.hook_attn_scores", scores)
    assert stacked.shape == (b, h, p + 1, p + 1)
    assert (stacked[:, :, :p, p] == torch.finfo(torch.float32).min).all()
    index_scores = [torch.randn(b, p, p).tril().masked_fill(torch.ones(p, p).triu(1).bool(), -torch.inf)]
    index_scores.append(torch.randn(b, 1, p + 1))  # [b, query, key]: a sparse-attention indexer's scores
    stacked = _stack_hook("blocks.0.attn.hook_index_scores", index_scores)
    assert stacked.shape == (b, p + 1, p + 1) and torch.equal(stacked[:, p], index_scores[1][:, 0])
    assert torch.isneginf(stacked[:, :p, p]).all()  # padded as the model masks: with -inf here
    with pytest.raises(BridgeError, match=r"cannot stack 'blocks\.0\.attn\.hook_alibi'"):
        _stack_hook("blocks.0.attn.hook_alibi", [torch.randn(1, h, 1, p), torch.randn(1, h, 1, p + 1)])
    with pytest.raises(BridgeError, match="no generation steps"):
        StepCaches().stack()


def test_sampling_with_a_seed_equals_hf_generate_sampling(pair):
    prompt = pair.tokens(3, 4, seed=6)
    settings = {"temperature": 0.7, "top_k": 20, "top_p": 0.9}
    outputs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        got = pair.bridge.generate(prompt, max_new_tokens=10, verbose=False, **settings)
        torch.manual_seed(seed)
        expected = pair.reference.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=10,
            do_sample=True,
            eos_token_id=EOS,
            pad_token_id=EOS,
            **settings,
        )
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        outputs.append(got)
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])
    torch.manual_seed(2)  # no top_k/top_p: the full distribution (HF's top_k default of 50 is off)
    got = pair.bridge.generate(prompt, max_new_tokens=10, verbose=False)
    torch.manual_seed(2)
    expected = pair.reference.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=10,
        do_sample=True,
        top_k=0,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_temperature_zero_is_greedy(pair):
    prompt = pair.tokens(2, 5)
    torch.testing.assert_close(
        pair.bridge.generate(prompt, temperature=0.0, stop_at_eos=False, verbose=False),
        greedy_without_cache(pair.reference, prompt, torch.ones_like(prompt), 10),
    )


def penalized_argmax_loop(reference, prompt, mask, new, temperature, penalty):
    """Argmax of ``logits / T - penalty · bincount(real tokens so far)``, reference model without a cache."""
    tokens, running = prompt, mask
    for _ in range(new):
        with torch.no_grad():
            out = reference(tokens, attention_mask=running, position_ids=(running.cumsum(-1) - 1).clamp(min=0))
        scores = out.logits[:, -1] / temperature
        counts = torch.stack(
            [torch.bincount(row[m.bool()], minlength=scores.shape[-1]) for row, m in zip(tokens, running, strict=True)]
        )
        next_token = (scores - penalty * counts).argmax(-1, keepdim=True)
        tokens, running = torch.cat([tokens, next_token], 1), torch.cat([running, torch.ones_like(next_token)], 1)
    return tokens


def test_frequency_penalty_subtracts_counts_after_temperature(pair):
    """top_k=1 makes sampling deterministic, so a plain argmax loop is the reference; the example is one
    where penalizing before the temperature, or not at all, gives other tokens."""
    prompt, mask = left_padded([pair.tokens(1, 6, seed=7)[0], pair.tokens(1, 3, seed=8)[0]])
    temperature, penalty, new = 2.0, 2.0, 8
    expected = penalized_argmax_loop(pair.reference, prompt, mask, new, temperature, penalty)
    got = pair.bridge.generate(
        prompt,
        attention_mask=mask,
        max_new_tokens=new,
        top_k=1,
        temperature=temperature,
        freq_penalty=penalty,
        stop_at_eos=False,
        verbose=False,
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    penalty_before_temperature = penalized_argmax_loop(pair.reference, prompt, mask, new, 1.0, penalty)
    unpenalized = quiet_generate(pair.bridge, prompt, attention_mask=mask, max_new_tokens=new)
    assert not torch.equal(expected, penalty_before_temperature) and not torch.equal(expected, unpenalized)


def test_frequency_penalty_processor_ignores_padding():
    processor = FrequencyPenalty(2.0, prompt_mask=torch.tensor([[0, 1, 1]]))
    scores = processor(torch.tensor([[3, 3, 1, 3]]), torch.zeros(1, 5))
    torch.testing.assert_close(scores, torch.tensor([[0.0, -2.0, 0.0, -4.0, 0.0]]))


def test_stop_at_eos_pads_finished_rows_and_stops_when_all_are_done(pair):
    prompt = pair.tokens(2, 5, seed=9)
    free = quiet_generate(pair.bridge, prompt, max_new_tokens=10)
    eos = free[0, 5 + 2].item()  # row 0 produces this token on its third step
    got = pair.bridge.generate(prompt, max_new_tokens=10, do_sample=False, eos_token_id=eos, verbose=False)
    expected = pair.reference.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    first = (got[0, 5:] == eos).nonzero()[0].item()
    assert (got[0, 5 + first :] == eos).all()
    stops = [(row[5:] == eos).nonzero() for row in free]
    if all(len(s) for s in stops):
        assert got.shape[1] == 5 + 1 + max(s[0].item() for s in stops)
    # a list of stop tokens: finished rows are padded with the tokenizer's EOS, as in TransformerLens
    as_list = pair.bridge.generate(prompt, max_new_tokens=10, do_sample=False, eos_token_id=[eos, 999], verbose=False)
    expected_list = pair.reference.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=[eos, 999],
        pad_token_id=EOS,
    )
    torch.testing.assert_close(as_list, expected_list, rtol=0, atol=0)
    assert quiet_generate(pair.bridge, prompt, max_new_tokens=10, eos_token_id=eos).shape[1] == 15


def test_text_prompts_are_left_padded_and_match_one_by_one(pair):
    texts = ["the cat sat on the mat and", "hi", "When Mary and John"]
    batched = quiet_generate(pair.bridge, texts, max_new_tokens=6, padding_side="right")
    assert isinstance(batched, list) and len(batched) == 3
    for text, out in zip(texts, batched, strict=True):
        alone = quiet_generate(pair.bridge, text, max_new_tokens=6)
        assert isinstance(alone, str) and alone == out and alone.startswith(text)


def test_return_types(pair):
    model, prompt = pair.bridge, pair.tokens(1, 4)
    tokens = quiet_generate(model, prompt, max_new_tokens=3)
    assert tokens.shape == (1, 7)
    assert quiet_generate(model, prompt, max_new_tokens=3, return_type="str") == model.tokenizer.decode(tokens[0])
    assert quiet_generate(model, [model.to_string(prompt[0])], max_new_tokens=3, return_type="tokens").ndim == 2
    assert isinstance(quiet_generate(model, ["hello"], max_new_tokens=3), list)
    embeds = quiet_generate(model, prompt, max_new_tokens=3, return_type="embeds")
    torch.testing.assert_close(embeds, pair.reference.transformer.wte.weight[tokens])
    prompt_embeds = pair.reference.transformer.wte.weight[prompt].detach()
    new_tokens = quiet_generate(model, prompt_embeds, max_new_tokens=3, return_type="tokens")
    torch.testing.assert_close(new_tokens, tokens[:, 4:])
    out_embeds = quiet_generate(model, prompt_embeds, max_new_tokens=3)
    torch.testing.assert_close(out_embeds, embeds)


def test_progress_bar_only_when_verbose(pair, capsys):
    pair.bridge.generate(pair.tokens(1, 3), max_new_tokens=4, stop_at_eos=False, verbose=True)
    assert "4/4" in capsys.readouterr().err
    pair.bridge.generate(pair.tokens(1, 3), max_new_tokens=4, stop_at_eos=False, verbose=False)
    assert capsys.readouterr().err == ""


def test_generate_leaves_the_model_as_it_was(pair):
    model = pair.bridge
    config = model.hf_model.generation_config

    def boom(t, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        quiet_generate(
            model, pair.tokens(1, 3), names_filter="hook_embed", fwd_hooks=[("blocks.1.hook_resid_post", boom)]
        )
    assert model.hf_model.generation_config is config
    assert not any(h.active for h in model.hook_points())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.hf_model.modules())


def test_bad_input_gets_clear_errors(pair, gpt2_dir):
    model = pair.bridge
    with pytest.raises(BridgeError, match="return_type must be"):
        model.generate("hi", return_type="logits", verbose=False)
    with pytest.raises(BridgeError, match="generate takes a str"):
        model.generate([1, 2, 3], verbose=False)
    with pytest.raises(BridgeError, match="attention_mask has shape"):
        model.generate(pair.tokens(2, 4), attention_mask=torch.ones(2, 3), verbose=False)
    with pytest.raises(BridgeError, match="max_new_tokens must be at least 1"):
        model.generate("hi", max_new_tokens=0, verbose=False)
    with pytest.raises(BridgeError, match="freq_penalty counts tokens"):
        model.generate(torch.randn(1, 3, model.cfg.d_model), freq_penalty=1.0, verbose=False)
    with pytest.raises(BridgeError, match="top_p must be"):
        model.generate("hi", top_p=1.5, verbose=False)
    with pytest.raises(HookNameError, match="hook_resid_post"):
        model.generate("hi", names_filter="blocks.0.hook_resid_pst", verbose=False)
    untokenized = bridge.wrap(pair.reference)
    with pytest.raises(BridgeError, match="eos_token_id"):
        untokenized.generate(pair.tokens(1, 3), verbose=False)
    assert untokenized.generate(pair.tokens(1, 3), stop_at_eos=False, verbose=False).shape == (1, 13)
    untokenized.detach()
    headless = bridge.wrap(GPT2Model(examples_of(GPT2Adapter).example_config("GPT2Model")))
    with pytest.raises(NoLMHeadError, match="cannot generate"):
        headless.generate(pair.tokens(1, 3), verbose=False)


def test_hf_output_object_on_request(pair):
    prompt = pair.tokens(2, 4)
    kwargs = {"max_new_tokens": 3, "do_sample": False, "return_dict_in_generate": True, "output_logits": True}
    got = pair.bridge.generate(prompt, stop_at_eos=False, verbose=False, **kwargs)
    expected = pair.reference.generate(
        prompt, attention_mask=torch.ones_like(prompt), eos_token_id=[], pad_token_id=EOS, **kwargs
    )
    torch.testing.assert_close(got.sequences, expected.sequences, rtol=0, atol=0)
    for mine, theirs in zip(got.logits, expected.logits, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-5)
