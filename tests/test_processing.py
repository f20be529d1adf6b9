"""Weight processing on every family's tiny model, against a fresh unprocessed HF model from the same directory."""

from __future__ import annotations

import warnings

import einops
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoConfig

import bridge
from bridge.analysis.processing import UntiedEmbeddingsWarning, WeightProcessingError
from bridge.kernel.components import Norm
from bridge.testing import TOLERANCE, examples_of, save_tiny_model
from bridge_alibi.adapters import ADAPTERS as ALIBI
from bridge_gpt2.adapters import ADAPTERS as GPT2_FAMILY
from bridge_llama.catalog import ADAPTERS as LLAMA_FAMILY
from bridge_mamba.adapters import MambaAdapter
from bridge_mla.adapters import ADAPTERS as MLA

ATTENTION = (*GPT2_FAMILY, *LLAMA_FAMILY, *ALIBI, *MLA)
LN = tuple(a for a in ATTENTION if a in GPT2_FAMILY or a in ALIBI or getattr(a, "norm", {}).get("kind") == "LN")
RMS = tuple(a for a in ATTENTION if a not in LN)
#: PhiMoE's LayerNorm biases cannot move into HF's bias-free experts, so fold_ln refuses it (tested in bridge_llama).
#: Llama 4's experts read the normed token times its routing score: fold_ln refuses there (tested in bridge-llama).
UNFOLDABLE = tuple(a for a in LLAMA_FAMILY if a.__name__ in ("PhimoeAdapter", "Llama4Adapter"))
FOLDABLE = tuple(a for a in ATTENTION if a not in UNFOLDABLE)
LN_FOLDABLE = tuple(a for a in LN if a not in UNFOLDABLE)
ids = lambda adapters: [a.__name__ for a in adapters]  # noqa: E731
#: Processing re-associates float32 products (a norm's weight folded into the readers' weights, a mean subtracted
#: from them): each log-prob moves by a few float32 roundings of values of order 10, amplified through two layers.
#: The worst gap measured over every family's architectures is 4.3e-6; the kit's TOLERANCE (1e-5) bounds it with a
#: margin of two, where the former 1e-4 would have let a folded bias off by 1e-4 through.
TOL = {"atol": TOLERANCE, "rtol": 0}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """The saved tiny model of an adapter (norms and biases perturbed), one per session."""
    saved = {}

    def get(adapter):
        if adapter not in saved:
            saved[adapter] = save_tiny_model(
                examples_of(adapter).example_config(), tmp_path_factory.mktemp(adapter.__name__)
            )
        return saved[adapter]

    return get


def reference(adapter, directory):
    """A fresh, unprocessed HF model from ``directory`` (the adapter's own reference semantics)."""
    model_class = adapter(AutoConfig.from_pretrained(directory)).model_class()
    return examples_of(adapter).reference_model(model_class, directory)


def tokens(batch=2, length=9, seed=0):
    return torch.randint(1, 128, (batch, length), generator=torch.Generator().manual_seed(seed))


def log_probs(logits):
    return logits.float().log_softmax(-1)


def softcap(bridge_model, logits):
    """What HF does to ``x @ W_U + b_U`` to make its logits: Gemma 2's soft-capping (Granite's ``logits_scaling``
    is inside ``W_U``)."""
    cap = bridge_model.cfg.extra.get("final_logit_softcapping")
    return torch.tanh(logits / cap) * cap if cap else logits


# ------------------------------------------------------------------ every family


@pytest.mark.parametrize("adapter", FOLDABLE, ids=ids(FOLDABLE))
def test_processing_keeps_log_probs(adapter, model_dir):
    directory = model_dir(adapter)
    model = bridge.load(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntiedEmbeddingsWarning)
        model.process_weights()
    # BLOOM's embedding is a LayerNorm, XGLM's positions a fixed sinusoid: neither can be centred
    centred = adapter in LN and adapter.__name__ not in ("BloomAdapter", "XGLMAdapter")
    expected_steps = {"fold_ln"} | ({"center_writing_weights"} if centred else set())
    if not model.cfg.extra.get("attention_sinks"):  # sinks: patterns sum to < 1, value biases stay
        expected_steps.add("fold_value_biases")
    if not model.cfg.extra.get("final_logit_softcapping"):
        expected_steps.add("center_unembed")
    assert set(model.cfg.extra["weight_processing"]) == expected_steps
    x = tokens()
    with torch.no_grad():
        expected = log_probs(reference(adapter, directory)(x).logits)
        torch.testing.assert_close(log_probs(model(x)), expected, **TOL)


@pytest.mark.parametrize("adapter", FOLDABLE, ids=ids(FOLDABLE))
def test_fold_ln_moves_norm_weights_into_readers(adapter, model_dir):
    """Every pre-norm ends with weight 1 (Gemma: 0) and bias 0, its hook_normalized is its module's output,
    and ln_final.hook_normalized @ W_U + b_U gives the logits."""
    directory = model_dir(adapter)
    model = bridge.load(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntiedEmbeddingsWarning)
        model.fold_layer_norm()
    pre_norms = {
        f"blocks.{i}.{role}": getattr(block, role)
        for i, block in enumerate(model.blocks)
        for role in ("ln1", "ln2")
        if isinstance(getattr(block, role, None), Norm)
    }
    pre_norms["ln_final"] = model.ln_final
    outputs = {}
    handles = [
        norm.hf.register_forward_hook(lambda _m, _a, out, name=name: outputs.__setitem__(name, out))
        for name, norm in pre_norms.items()
    ]
    for norm in pre_norms.values():
        weight, bias = getattr(norm.hf, "weight", None), getattr(norm.hf, "bias", None)
        assert weight is None or torch.equal(weight, torch.full_like(weight, 1.0 - norm.weight_offset))
        assert bias is None or not bias.any()
    x = tokens()
    with torch.no_grad():
        logits, cache = model.run_with_cache(x, names_filter=lambda n: n.endswith("hook_normalized"))
        expected = reference(adapter, directory)(x).logits
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(log_probs(logits), log_probs(expected), **TOL)
    for name in pre_norms:
        torch.testing.assert_close(cache[f"{name}.hook_normalized"], outputs[name].float(), atol=1e-6, rtol=0)
    unembedded = cache["ln_final.hook_normalized"] @ model.W_U + model.b_U
    torch.testing.assert_close(softcap(model, unembedded), logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("adapter", LN_FOLDABLE, ids=ids(LN_FOLDABLE))
def test_fold_ln_centres_reading_weights_of_layer_norms(adapter, model_dir):
    """LayerNorm output is mean-zero, so the folded weights reading it are centred over d_model."""
    model = bridge.load(model_dir(adapter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntiedEmbeddingsWarning)
        model.fold_layer_norm()
    torch.testing.assert_close(model.W_U.mean(0), torch.zeros(model.cfg.d_vocab), atol=1e-6, rtol=0)


@pytest.mark.parametrize("adapter", LN_FOLDABLE, ids=ids(LN_FOLDABLE))
def test_center_writing_weights_makes_the_residual_stream_mean_zero(adapter, model_dir):
    if adapter.__name__ == "BloomAdapter":
        pytest.skip("BLOOM's embedding LayerNorm cannot be centred (test_refusals covers it)")
    if adapter.__name__ == "XGLMAdapter":
        pytest.skip("XGLM's sinusoidal positions are not a parameter (bridge_gpt2's tests cover the refusal)")
    directory = model_dir(adapter)
    model = bridge.load(directory).process_weights(fold_ln=True, center_writing_weights=True)
    x = tokens()
    with torch.no_grad():
        logits, cache = model.run_with_cache(x, names_filter=lambda n: "resid" in n or n.endswith("_out"))
        expected = reference(adapter, directory)(x).logits
    torch.testing.assert_close(log_probs(logits), log_probs(expected), **TOL)
    for activation in cache.values():
        torch.testing.assert_close(activation.mean(-1), torch.zeros(activation.shape[:-1]), atol=1e-5, rtol=0)
    assert len([n for n in cache if n.endswith("hook_resid_post")]) == model.cfg.n_layers


@pytest.mark.parametrize("adapter", ATTENTION, ids=ids(ATTENTION))
def test_center_unembed(adapter, model_dir):
    directory = model_dir(adapter)
    model = bridge.load(directory)
    if model.cfg.extra.get("final_logit_softcapping"):
        with pytest.raises(WeightProcessingError, match="soft-capped"):
            model.center_unembed()
        return
    embedding_before = model.W_E.clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.center_unembed()
    x = tokens()
    with torch.no_grad():
        logits = model(x)
        expected = reference(adapter, directory)(x).logits
    torch.testing.assert_close(logits.mean(-1), torch.zeros(logits.shape[:-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(log_probs(logits), log_probs(expected), **TOL)
    assert torch.equal(model.W_E, embedding_before)
    tied = any(issubclass(w.category, UntiedEmbeddingsWarning) for w in caught)
    assert tied == bool(reference(adapter, directory).config.tie_word_embeddings)


# ------------------------------------------------------------------ value biases


def reference_value_bias(adapter, hf):
    """b_V ``[n_heads, d_head]`` (query heads) of layer 0, read with the family's known layout; None if no bias."""
    name, cfg = adapter.__name__, hf.config
    if name == "GPT2Adapter":
        d = cfg.n_embd
        return einops.rearrange(hf.transformer.h[0].attn.c_attn.bias[2 * d :], "(h d) -> h d", h=cfg.n_head)
    if name == "GPTBigCodeAdapter":  # multi-query: [q (d_model) | k (d_head) | v (d_head)]
        d_head = cfg.n_embd // cfg.n_head
        return einops.repeat(hf.transformer.h[0].attn.c_attn.bias[-d_head:], "d -> h d", h=cfg.n_head)
    if name == "GPTNeoXAdapter":
        bias = hf.gpt_neox.layers[0].attention.query_key_value.bias
        return einops.rearrange(bias, "(h three d) -> three h d", three=3, h=cfg.num_attention_heads)[2]
    if name == "BloomAdapter":
        bias = hf.transformer.h[0].self_attention.query_key_value.bias
        return einops.rearrange(bias, "(h three d) -> three h d", three=3, h=cfg.n_head)[2]
    if name == "FalconAdapter":  # multi-query: [q_1 … q_h | k | v]
        bias = hf.transformer.h[0].self_attention.query_key_value.bias
        return einops.repeat(bias[-cfg.head_dim :], "d -> h d", h=cfg.num_attention_heads)
    if name == "Qwen2Adapter":  # GQA: kv head j serves query heads j·g … j·g + g - 1
        bias = einops.rearrange(hf.model.layers[0].self_attn.v_proj.bias, "(kv d) -> kv d", kv=cfg.num_key_value_heads)
        return einops.repeat(bias, "kv d -> (kv g) d", g=cfg.num_attention_heads // cfg.num_key_value_heads)
    return None


def out_projection(adapter, hf):
    name = adapter.__name__
    if name == "GPT2Adapter":
        module = hf.transformer.h[0].attn.c_proj
        return module.weight, module.bias  # Conv1D: [d_in, d_model]
    module = {
        "GPTBigCodeAdapter": lambda: hf.transformer.h[0].attn.c_proj,
        "GPTNeoXAdapter": lambda: hf.gpt_neox.layers[0].attention.dense,
        "BloomAdapter": lambda: hf.transformer.h[0].self_attention.dense,
        "FalconAdapter": lambda: hf.transformer.h[0].self_attention.dense,
        "Qwen2Adapter": lambda: hf.model.layers[0].self_attn.o_proj,
    }[name]()
    return module.weight.T, module.bias


BIASED = ("GPT2Adapter", "GPTBigCodeAdapter", "GPTNeoXAdapter", "BloomAdapter", "FalconAdapter", "Qwen2Adapter")
WITH_VALUE_BIAS = tuple(a for a in ATTENTION if a.__name__ in BIASED)


@pytest.mark.parametrize("adapter", WITH_VALUE_BIAS, ids=ids(WITH_VALUE_BIAS))
def test_fold_value_biases(adapter, model_dir):
    """b_O gains Σ_h b_V[h] @ W_O[h] (b_V and W_O read from the reference by the family's layout), b_V is 0."""
    directory = model_dir(adapter)
    model = bridge.load(directory).fold_value_biases()
    ref = reference(adapter, directory)
    b_v = reference_value_bias(adapter, ref)
    w_o, b_o = out_projection(adapter, ref)
    assert b_v.abs().min() > 0
    w_o = einops.rearrange(w_o, "(h d) m -> h d m", h=model.cfg.n_heads)
    expected_b_o = torch.einsum("hd,hdm->m", b_v, w_o) + (0 if b_o is None else b_o)
    torch.testing.assert_close(out_projection(adapter, model.hf_model)[1], expected_b_o, atol=1e-6, rtol=0)
    assert not reference_value_bias(adapter, model.hf_model).any()
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(log_probs(model(x)), log_probs(ref(x).logits), **TOL)


@pytest.mark.parametrize("adapter", (*LLAMA_FAMILY[:1], *MLA, ALIBI[1]), ids=ids((*LLAMA_FAMILY[:1], *MLA, ALIBI[1])))
def test_fold_value_biases_without_value_bias_changes_nothing(adapter, model_dir):
    model = bridge.load(model_dir(adapter))
    before = {name: p.clone() for name, p in model.hf_model.named_parameters()}
    model.fold_value_biases()
    assert all(torch.equal(p, before[name]) for name, p in model.hf_model.named_parameters())


# ------------------------------------------------------------------ refusals


def assert_unchanged(model, before):
    after = dict(model.hf_model.named_parameters())
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.hf_model.named_parameters()}


@pytest.mark.parametrize("adapter", RMS, ids=ids(RMS))
def test_center_writing_weights_refused_on_rms_models(adapter, model_dir):
    model = bridge.load(model_dir(adapter))
    before = snapshot(model)
    with pytest.raises(WeightProcessingError, match="RMSNorm, which does not subtract the mean"):
        model.process_weights(fold_ln=True, center_writing_weights=True)
    assert_unchanged(model, before)


def test_center_writing_weights_refused_when_embedding_is_a_layer_norm(model_dir):
    model = bridge.load(model_dir(ALIBI[0]))  # BLOOM: word_embeddings_layernorm writes the residual stream
    before = snapshot(model)
    with pytest.raises(WeightProcessingError, match="LayerNorm, not an embedding matrix"):
        model.center_writing_weights()
    assert_unchanged(model, before)


def test_center_unembed_refused_with_logit_softcapping(model_dir):
    model = bridge.load(model_dir(LLAMA_FAMILY[4]))  # Gemma 2
    assert model.cfg.extra["final_logit_softcapping"]
    with pytest.raises(WeightProcessingError, match="soft-capped"):
        bridge.load(model_dir(LLAMA_FAMILY[4]), center_unembed=True)


@pytest.mark.parametrize("step", ["fold_ln", "fold_value_biases"])
def test_ssm_models_refused(step, model_dir):
    model = bridge.load(model_dir(MambaAdapter))
    before = snapshot(model)
    with pytest.raises(WeightProcessingError, match=r"state-space (mixers|or linear-attention layers)"):
        model.process_weights(**{step: True})
    assert_unchanged(model, before)
    model.process_weights()  # the default does only what applies: center_unembed
    assert model.cfg.extra["weight_processing"] == ["center_unembed"]


def test_fold_ln_refused_when_something_else_reads_the_norm(model_dir):
    """A pre-norm whose output is also used by a non-linear operation cannot be folded."""
    model = bridge.load(model_dir(GPT2_FAMILY[0]))
    attn = model.hf_model.transformer.h[1].attn

    def add_norm_mean(_module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (output[0] + hidden.mean(-1, keepdim=True), *output[1:])

    attn.register_forward_hook(add_norm_mean, with_kwargs=True)
    before = snapshot(model)
    with pytest.raises(WeightProcessingError, match=r"cannot fold blocks\.1\.ln1: its output is read by `mean`"):
        model.fold_layer_norm()
    assert_unchanged(model, before)


def test_fold_ln_refused_for_an_unknown_reader(model_dir):
    class Projection(torch.nn.Module):
        def __init__(self, linear):
            super().__init__()
            self.matrix = torch.nn.Parameter(linear.weight.detach().clone())  # [vocab, d_model]

        def forward(self, x):
            return x @ self.matrix.T

    model = bridge.load(model_dir(GPT2_FAMILY[0]))
    model.hf_model.lm_head = Projection(model.hf_model.lm_head)
    with pytest.raises(WeightProcessingError, match=r"cannot fold ln_final into lm_head \(Projection\)"):
        model.fold_layer_norm()


def test_fold_ln_refused_for_a_product_outside_the_reading_modules(model_dir):
    class HeadWithExtra(torch.nn.Module):  # reads ln_f's output with its Linear child and with a buffer
        def __init__(self, linear):
            super().__init__()
            self.inner = linear
            self.register_buffer("extra", torch.ones(linear.in_features, linear.out_features))

        def forward(self, x):
            return self.inner(x) + x @ self.extra

    model = bridge.load(model_dir(GPT2_FAMILY[0]))
    model.hf_model.lm_head = HeadWithExtra(model.hf_model.lm_head)
    with pytest.raises(WeightProcessingError, match="lm_head multiplies its output by a matrix that is not a weight"):
        model.fold_layer_norm()


def test_fold_ln_refused_when_a_reader_has_no_bias_for_the_norm_bias(model_dir):
    class BiasFreeHead(torch.nn.Module):  # a router-like reader: a 2-D weight and no bias slot
        def __init__(self, linear):
            super().__init__()
            self.weight = torch.nn.Parameter(linear.weight.detach().clone())  # [vocab, d_model]

        def forward(self, x):
            return torch.nn.functional.linear(x, self.weight)

    model = bridge.load(model_dir(GPT2_FAMILY[0]))
    model.hf_model.lm_head = BiasFreeHead(model.hf_model.lm_head)
    before = snapshot(model)
    with pytest.raises(WeightProcessingError, match=r"cannot fold ln_final's bias into lm_head \(BiasFreeHead\)"):
        model.fold_layer_norm()
    assert_unchanged(model, before)


class ScaledHead(torch.nn.Module):
    """Multiplies its input by a Python number before its Linear (Falcon-H1's µP multipliers)."""

    def __init__(self, linear, scale):
        super().__init__()
        self.inner, self.scale = linear, scale

    def forward(self, x):
        return self.inner(x * self.scale)


def test_fold_ln_through_a_scalar_multiplier_keeps_the_logits(model_dir):
    """A bias-free norm read through ``x * number`` folds: scaling commutes with the reader's weight."""
    model = bridge.load(model_dir(LLAMA_FAMILY[0]))
    model.hf_model.lm_head = ScaledHead(model.hf_model.lm_head, 0.7)
    tokens = torch.tensor([[1, 5, 9, 2, 7]])
    expected = model(tokens)
    model.fold_layer_norm()
    torch.testing.assert_close(model(tokens), expected, atol=1e-5, rtol=0)
    norm = model.ln_final.hf.weight
    torch.testing.assert_close(norm, torch.ones_like(norm))


def test_fold_ln_refused_through_a_scalar_multiplier_when_the_norm_has_a_bias(model_dir):
    """``(x·w + b)·m`` read by ``W``: the bias would need ``m`` too, so a LayerNorm scaled on its way is refused."""
    model = bridge.load(model_dir(GPT2_FAMILY[0]))
    model.hf_model.lm_head = ScaledHead(model.hf_model.lm_head, 0.7)
    before = snapshot(model)
    with pytest.raises(WeightProcessingError, match=r"cannot fold ln_final: its output is read by `mul` by 0\.7"):
        model.fold_layer_norm()
    assert_unchanged(model, before)


def test_fold_value_biases_refused_when_v_is_clipped(model_dir):
    """MPT's clip_qkv with a bias on Wqkv (HF's MPT has none; one is given here): v = clamp(x W + b)
    is not "projection + bias", so the bias cannot move past the attention."""
    model = bridge.load(model_dir(ALIBI[1]))
    wqkv = model.hf_model.transformer.blocks[0].attn.Wqkv
    wqkv.bias = torch.nn.Parameter(0.01 * torch.randn(wqkv.out_features, generator=torch.Generator().manual_seed(0)))
    before = snapshot(model)
    with pytest.raises(WeightProcessingError, match=r"hook_v is not a plain slice of blocks\.0\.attn\.Wqkv"):
        model.process_weights(fold_value_biases=True)
    assert_unchanged(model, before)


def test_processing_refused_while_hooks_are_attached(model_dir):
    model = bridge.load(model_dir(GPT2_FAMILY[0]))
    model.add_hook("blocks.0.hook_resid_pre", lambda x, hook: x)
    with pytest.raises(WeightProcessingError, match="reset_hooks"):
        model.process_weights()


# ------------------------------------------------------------------ post-norms, tying, loading


@pytest.mark.parametrize("adapter", [a for a in LLAMA_FAMILY if a.__name__ in ("Olmo2Adapter", "Gemma2Adapter")])
def test_post_norms_are_left_alone(adapter, model_dir):
    model = bridge.load(model_dir(adapter))
    post = {f"{i}.{role}": getattr(b, role).hf.weight.clone() for i, b in enumerate(model.blocks)
            for role in ("ln1_post", "ln2_post")}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntiedEmbeddingsWarning)
        model.fold_layer_norm()
    for key, weight in post.items():
        i, role = key.split(".")
        assert torch.equal(getattr(model.blocks[int(i)], role).hf.weight, weight)


def test_tied_unembedding_is_untied(model_dir):
    model = bridge.load(model_dir(GPT2_FAMILY[0]))
    hf = model.hf_model
    assert hf.lm_head.weight is hf.transformer.wte.weight
    embedding = hf.transformer.wte.weight.detach().clone()
    with pytest.warns(UntiedEmbeddingsWarning, match="tied embeddings"):
        model.process_weights()
    assert hf.lm_head.weight is not hf.transformer.wte.weight
    assert torch.equal(hf.transformer.wte.weight, embedding - embedding.mean(-1, keepdim=True))  # centred only
    assert hf.config.tie_word_embeddings is False
    assert hf.lm_head.bias is not None  # ln_f's bias folded in: W_U @ b


def test_untied_processed_model_survives_saving(model_dir, tmp_path):
    """Saved and reloaded, a processed tied model keeps its own unembedding (Gemma 3: no new biases)."""
    model = bridge.load(model_dir(LLAMA_FAMILY[5]))
    assert model.hf_model.config.tie_word_embeddings
    with pytest.warns(UntiedEmbeddingsWarning):
        model.process_weights()
    model.hf_model.save_pretrained(tmp_path)
    reloaded = bridge.load(tmp_path, tokenizer=False)
    x = tokens()
    assert not reloaded.hf_model.config.tie_word_embeddings
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), atol=1e-6, rtol=0)


def test_load_with_processing_flags(model_dir):
    directory = model_dir(GPT2_FAMILY[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntiedEmbeddingsWarning)
        loaded = bridge.load(
            directory, fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True
        )
        processed = bridge.load(directory).process_weights()
    assert loaded.cfg.extra["weight_processing"] == list(
        ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
    )
    for (name, p), (_, q) in zip(
        loaded.hf_model.named_parameters(), processed.hf_model.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), name
    assert "weight_processing" not in bridge.load(directory).cfg.extra  # opt-in
    with pytest.raises(WeightProcessingError, match="RMSNorm"):
        bridge.load(model_dir(LLAMA_FAMILY[0]), center_writing_weights=True)


def test_processing_twice_changes_nothing(model_dir):
    model = bridge.load(model_dir(LLAMA_FAMILY[2]))  # Qwen2: q/k/v biases
    model.process_weights()
    once = snapshot(model)
    model.process_weights()
    after = snapshot(model)
    for name in once:
        torch.testing.assert_close(after[name], once[name], atol=1e-6, rtol=0)


# ------------------------------------------------------------------ any batch, length, padding


@pytest.fixture(scope="module")
def processed_pairs(tmp_path_factory):
    pairs = {}
    for adapter in (GPT2_FAMILY[0], LLAMA_FAMILY[2]):  # GPT-2 (LN, tied, fused qkv) and Qwen2 (RMS, GQA, v bias)
        directory = save_tiny_model(
            examples_of(adapter).example_config(), tmp_path_factory.mktemp(adapter.__name__), seed=3
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntiedEmbeddingsWarning)
            pairs[adapter.__name__] = (bridge.load(directory).process_weights(), reference(adapter, directory))
    return pairs


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["GPT2Adapter", "Qwen2Adapter"]),
    batch=st.integers(1, 3),
    length=st.integers(1, 12),
    pad=st.integers(0, 11),
    seed=st.integers(0, 2**16),
)
def test_processed_log_probs_with_any_shape_and_left_padding(processed_pairs, name, batch, length, pad, seed):
    model, ref = processed_pairs[name]
    x = tokens(batch, length, seed)
    mask = torch.ones_like(x)
    mask[0, : min(pad, length - 1)] = 0  # left padding in the first row, at least one real token
    with torch.no_grad():
        got = log_probs(model(x, attention_mask=mask))
        expected = log_probs(ref(x, attention_mask=mask, position_ids=model_positions(mask)).logits)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], **TOL)


def model_positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


# ------------------------------------------------------------------ layout variants


def _variant(adapter, **changes):
    config = examples_of(adapter).example_config()
    for key, value in changes.items():
        setattr(config, key, value)
    return config


VARIANTS = {
    "bigcode-per-head": (GPT2_FAMILY[2], lambda: _variant(GPT2_FAMILY[2], multi_query=False)),
    "neox-sequential": (GPT2_FAMILY[1], lambda: _variant(GPT2_FAMILY[1], use_parallel_residual=False)),
    "falcon-grouped": (
        ALIBI[2],
        lambda: examples_of(ALIBI[2]).example_config(new_decoder_architecture=True, num_kv_heads=2, alibi=False),
    ),
    "falcon-rotary-sequential-mha": (
        ALIBI[2],
        lambda: examples_of(ALIBI[2]).example_config(alibi=False, multi_query=False, parallel_attn=False),
    ),
    "falcon-no-linear-biases": (ALIBI[2], lambda: examples_of(ALIBI[2]).example_config(bias=False)),
    "deepseek-v2-q-lora": (MLA[0], lambda: examples_of(MLA[0]).example_config(q_lora_rank=24)),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_processing_keeps_log_probs_in_layout_variants(variant, tmp_path):
    adapter, config = VARIANTS[variant]
    directory = save_tiny_model(config(), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntiedEmbeddingsWarning)
        model = bridge.load(directory).process_weights()
    assert {"fold_ln", "fold_value_biases"} <= set(model.cfg.extra["weight_processing"])
    if variant == "falcon-no-linear-biases":  # the norms' biases went into newly created linear biases
        assert model.hf_model.transformer.h[0].self_attention.query_key_value.bias is not None
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(log_probs(model(x)), log_probs(reference(adapter, directory)(x).logits), **TOL)


@pytest.mark.parametrize("adapter", [LLAMA_FAMILY[8], MLA[1]], ids=["Mixtral", "DeepseekV3"])
def test_fold_ln_reaches_the_router_and_every_expert(adapter, model_dir):
    """Weight surgery on the reference: every expert's gate/up input columns, the router's and the shared
    experts' are scaled by ln2's weight, whether or not the probe tokens were routed to that expert."""
    directory = model_dir(adapter)
    model = bridge.load(directory).fold_layer_norm()
    ref = reference(adapter, directory)
    layer = len(ref.model.layers) - 1  # DeepSeek-V3's first layer is dense
    ref_layer, got = ref.model.layers[layer], model.hf_model.model.layers[layer]
    w = ref_layer.post_attention_layernorm.weight  # [d_model]
    experts, ref_experts = got.mlp.experts, ref_layer.mlp.experts
    assert experts.gate_up_proj.shape[0] == model.cfg.extra["n_experts"]
    torch.testing.assert_close(experts.gate_up_proj, ref_experts.gate_up_proj * w, atol=1e-6, rtol=0)  # [E, 2f, d]
    torch.testing.assert_close(experts.down_proj, ref_experts.down_proj, atol=0, rtol=0)
    torch.testing.assert_close(got.mlp.gate.weight, ref_layer.mlp.gate.weight * w, atol=1e-6, rtol=0)
    if hasattr(ref_layer.mlp, "shared_experts"):
        shared, ref_shared = got.mlp.shared_experts, ref_layer.mlp.shared_experts
        for name in ("gate_proj", "up_proj"):
            expected = getattr(ref_shared, name).weight * w
            torch.testing.assert_close(getattr(shared, name).weight, expected, atol=1e-6, rtol=0)


class _HeadWithOwnParameter(torch.nn.Module):
    """Reads ln_f's output with its Linear child; its own parameter acts on the child's output (like GPT-OSS's
    attention sinks, a weight of the attention module that never touches its input) or, with ``on_input``, on
    the input itself through a matrix product."""

    def __init__(self, linear, on_input: bool):
        super().__init__()
        self.inner = linear
        self.on_input = on_input
        self.extra = torch.nn.Parameter(torch.randn(linear.in_features, linear.out_features) / 10)
        self.temperature = torch.nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        out = self.inner(x) * self.temperature
        return out + x @ self.extra if self.on_input else out


def test_fold_ln_into_a_module_whose_own_parameter_does_not_read_the_norm(model_dir):
    directory = model_dir(GPT2_FAMILY[0])
    model = bridge.load(directory)
    model.hf_model.lm_head = _HeadWithOwnParameter(model.hf_model.lm_head, on_input=False)
    x = tokens()
    with torch.no_grad():
        expected = log_probs(model(x))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntiedEmbeddingsWarning)
            model.fold_layer_norm()
        torch.testing.assert_close(log_probs(model(x)), expected, **TOL)
    assert model.hf_model.lm_head.temperature.item() == 1.5


def test_fold_ln_refused_when_a_modules_own_parameter_reads_the_norm(model_dir):
    model = bridge.load(model_dir(GPT2_FAMILY[0]))
    model.hf_model.lm_head = _HeadWithOwnParameter(model.hf_model.lm_head, on_input=True)
    before = snapshot(model)
    with pytest.raises(WeightProcessingError, match=r"lm_head \(_HeadWithOwnParameter\) reads its output with weights"):
        model.fold_layer_norm()
    assert_unchanged(model, before)
