"""GPT-J and CodeGen: the conformance kit on the published checkpoints' config switches, and what the kit cannot
see, each against HF's own code or a formula written here: ``hook_q/k/v`` in HF's head order (CodeGen's 4-part
``qkv_proj``), ``hook_rot_q/k`` as rotary on adjacent pairs, ``hook_attn_scores`` as HF's float32 arithmetic,
the hooked path bit for bit equal to HF (float32, bfloat16, dropout in training), the weight views, per-head
inputs through the partitioned projection, and the errors for configs and inputs HF cannot run."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.activations import ACT2FN

import bridge
from bridge import BridgeError
from bridge.kernel.errors import BadInputError
from bridge.testing import ALL_CHECKS, examples_of, make_pair, save_tiny_model
from bridge.testing.fixtures import build_tiny_model, sensitize, tiny_tokenizer
from bridge.testing.reference import (
    REFERENCE_TOKENS,
    attention_output,
    causal_attention,
    layer_norm,
    project,
    rotate,
    wrapped_with_random_biases,
)
from bridge_gpt2 import CodeGenAdapter, GPTJAdapter

ATTN = ".attn.hook_"
CAUSAL_LMS = [(GPTJAdapter, "GPTJForCausalLM"), (CodeGenAdapter, "CodeGenForCausalLM")]

# Tiny configs with the switches and proportions of the published checkpoints (all: rotary on adjacent pairs,
# untied embeddings, gelu_new, n_inner = 4·n_embd).
VARIANTS = {
    # GPT-J-6B: d_head 256, rotary_dim 64 (a quarter of each head), √d_head a power of two
    "gptj-6b-shape": (GPTJAdapter, {"n_embd": 64, "n_head": 4, "rotary_dim": 4}),
    # CodeGen-2B: d_head 80, rotary_dim 64 (0.8 of each head), √d_head irrational
    "codegen-2b-shape": (CodeGenAdapter, {"n_embd": 80, "n_head": 8, "rotary_dim": 8}),
    # CodeGen-16B: 24 heads (6 per part of qkv_proj), rotary_dim 64 of d_head 256
    "codegen-16b-shape": (CodeGenAdapter, {"n_embd": 96, "n_head": 12, "rotary_dim": 2}),
}


def _config(adapter, **changes):
    example = examples_of(adapter).example_config()
    return type(example)(**{**example.to_diff_dict(), **changes})


@pytest.fixture(scope="module")
def variant_dirs(tmp_path_factory):
    return {
        name: save_tiny_model(_config(adapter, **changes), tmp_path_factory.mktemp(name))
        for name, (adapter, changes) in VARIANTS.items()
    }


@pytest.mark.parametrize("path", ["native", "hooked"])
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_conformance(variant_dirs, variant, check, path):
    adapter, changes = VARIANTS[variant]
    pair = make_pair(adapter, path=path, directory=variant_dirs[variant])
    config = pair.bridge.hf_model.config
    assert {key: getattr(config, key) for key in changes} == changes
    assert pair.bridge.cfg.rotary_dim == changes["rotary_dim"] < pair.bridge.cfg.d_head
    check(pair)


# ----------------------------------------------------------------- hooks against HF's internals


def attention_cache(model: bridge.Bridge, tokens: torch.Tensor):
    """Every attention-internal hook cached (no block or norm hook, so HF's block forward runs)."""
    return model.run_with_cache(tokens, names_filter=lambda name: ATTN in name)


@pytest.mark.parametrize(("adapter", "arch"), CAUSAL_LMS)
def test_rot_q_k_are_rotary_on_adjacent_pairs_of_hook_q_k(pair_for, adapter, arch):
    model = pair_for(adapter, arch).bridge
    tokens = torch.randint(1, 128, (2, 9), generator=torch.Generator().manual_seed(3))
    _, cache = attention_cache(model, tokens)
    rotary_dim = model.cfg.rotary_dim
    assert 0 < rotary_dim < model.cfg.d_head
    for layer in range(model.cfg.n_layers):
        for kind in "qk":
            expected = rotate(cache[kind, layer], 10000.0, rotary_dim, interleaved=True)  # written from the definition
            torch.testing.assert_close(cache[f"rot_{kind}", layer], expected, atol=1e-5, rtol=1e-5)
            assert torch.equal(cache[f"rot_{kind}", layer][..., rotary_dim:], cache[kind, layer][..., rotary_dim:])


def test_codegen_q_k_v_are_hfs_heads_of_qkv_proj(pair_for):
    """HF's own split of ``qkv_proj``'s output (4 parts of ``[q | v | k]``, then ``_split_heads``) on the reference
    model equals ``hook_q/k/v``."""
    pair = pair_for(CodeGenAdapter, "CodeGenForCausalLM")
    model, reference = pair.bridge, pair.reference
    tokens = pair.tokens(2, 10)
    _, cache = attention_cache(model, tokens)
    n, d = model.cfg.n_heads, model.cfg.d_head
    fused: dict[int, torch.Tensor] = {}
    handles = [
        block.attn.qkv_proj.register_forward_hook(lambda _m, _a, out, i=i: fused.__setitem__(i, out))
        for i, block in enumerate(reference.transformer.h)
    ]
    with torch.no_grad():
        reference(tokens, use_cache=False)
    for handle in handles:
        handle.remove()
    for layer, qkv in fused.items():
        hf_attn = reference.transformer.h[layer].attn
        parts = qkv.reshape((*qkv.shape[:-1], 4, -1))
        query, value, key = torch.split(parts, n * d // 4, dim=-1)
        for kind, hf_value in (("q", query), ("k", key), ("v", value)):
            heads = hf_attn._split_heads(hf_value, n, d, mp_num=4)  # [b, p, n, d], HF's head order
            torch.testing.assert_close(cache[kind, layer], heads, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("adapter", "arch"), CAUSAL_LMS)
def test_attn_scores_are_hfs_float32_arithmetic(pair_for, adapter, arch):
    """``q·kᵀ / √d`` then the mask, masked entries the float32 minimum (for CodeGen too, whose HF code divides the
    masked scores by √d; see ``test_hooked_path_is_hf_bit_for_bit``); ``hook_pattern`` their softmax."""
    model = pair_for(adapter, arch).bridge
    tokens = torch.randint(1, 128, (2, 7), generator=torch.Generator().manual_seed(4))
    _, cache = attention_cache(model, tokens)
    scale = model.cfg.d_head**0.5
    future = torch.ones(7, 7, dtype=torch.bool).triu(1)
    for layer in range(model.cfg.n_layers):
        q, k = cache["rot_q", layer].transpose(1, 2), cache["rot_k", layer].transpose(1, 2)  # [b, h, p, d]
        expected = (q @ k.transpose(-1, -2) / scale).masked_fill(future, torch.finfo(torch.float32).min)
        scores = cache["attn_scores", layer]
        torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(cache["pattern", layer], scores.softmax(-1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("adapter", [GPTJAdapter, CodeGenAdapter], ids=lambda a: a.__name__)
def test_hooked_path_is_hf_bit_for_bit(tmp_path, adapter, dtype, padded):
    """With every attention-internal hook in use, logits and attentions equal HF's exactly: the same float32
    scores, the same division by √d_head, the same casts (HF's ``use_cache=False``, as the bridge runs), and for
    CodeGen the same pattern although its HF code divides the masked entries by √d_head too."""
    save_tiny_model(examples_of(adapter).example_config(), tmp_path)
    model = bridge.load(tmp_path, adapter=adapter, dtype=dtype)
    reference = type(model.hf_model).from_pretrained(tmp_path, dtype=dtype).eval()
    tokens = torch.randint(1, 128, (2, 11), generator=torch.Generator().manual_seed(5))
    inputs = {}
    if padded:  # the second row left-padded by 4, with HF's positions given to both
        mask = torch.ones_like(tokens)
        mask[1, :4] = 0
        inputs = {"attention_mask": mask, "position_ids": torch.arange(11).expand(2, 11)}
    with torch.no_grad():
        expected = reference(tokens, use_cache=False, output_attentions=True, **inputs)
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: ATTN in name, **inputs)
    assert logits.dtype == dtype
    assert torch.equal(logits, expected.logits)
    for layer, attentions in enumerate(expected.attentions):
        assert torch.equal(cache["pattern", layer], attentions)


@pytest.mark.parametrize("adapter", [GPTJAdapter, CodeGenAdapter], ids=lambda a: a.__name__)
def test_hooked_path_applies_hfs_dropouts_in_training(adapter):
    """In training mode the hooked attention draws the same dropout masks, in the same order, as HF's."""
    config = _config(adapter, attn_pdrop=0.3, resid_pdrop=0.2, embd_pdrop=0.1)
    hf_model = build_tiny_model(config)
    sensitize(hf_model)
    model = bridge.wrap(hf_model, tiny_tokenizer())
    tokens = torch.randint(1, 128, (2, 8), generator=torch.Generator().manual_seed(6))
    hf_model.train()
    torch.manual_seed(7)
    expected = hf_model(tokens, use_cache=False).logits
    torch.manual_seed(7)
    got = model.run_with_hooks(tokens, fwd_hooks=[(lambda n: n.endswith("attn.hook_pattern"), lambda t, hook: None)])
    torch.manual_seed(8)
    other = hf_model(tokens, use_cache=False).logits
    assert not torch.equal(expected, other)  # dropout is on
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


# ----------------------------------------------------------------- weight views


def logits_from_views(model: bridge.Bridge, tokens: torch.Tensor) -> torch.Tensor:
    """GPT-J's forward from nothing but the weight views, the norms and the config: one shared ``ln_1``,
    rotary on adjacent pairs of the first ``rotary_dim`` features, ``post = pre + attn + mlp``."""
    cfg = model.cfg
    resid = model.W_E[tokens]
    for block in model.blocks:
        x, attn, mlp = layer_norm(resid, block.ln1.hf), block.attn, block.mlp
        q, k, v = (project(x, w, b) for w, b in ((attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V)))
        q, k = (rotate(t, cfg.extra["rope_theta"], cfg.rotary_dim, interleaved=True) for t in (q, k))
        z = causal_attention(q, k, v, scale=cfg.d_head**-0.5)
        mlp_out = ACT2FN[cfg.act_fn](x @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out
        resid = resid + attention_output(z, attn) + mlp_out
    return layer_norm(resid, model.ln_final.hf) @ model.W_U + model.b_U


@pytest.mark.parametrize(
    ("adapter", "changes"),
    [(GPTJAdapter, {}), (CodeGenAdapter, {}), (CodeGenAdapter, VARIANTS["codegen-16b-shape"][1])],
    ids=["gptj", "codegen", "codegen-3-heads-per-part"],
)
def test_forward_from_weight_views_reproduces_hf_logits(adapter, changes):
    model = wrapped_with_random_biases(_config(adapter, **changes))
    sensitize(model.hf_model)  # attention far from uniform, so a misplaced rotary or head shows
    with torch.no_grad():
        expected = model.hf_model(REFERENCE_TOKENS).logits
        got = logits_from_views(model, REFERENCE_TOKENS)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_codegen_W_Q_K_V_are_rows_of_qkv_proj():
    """Head ``h`` of kind ``x`` is in part ``h // (n/4)`` of ``qkv_proj``, at ``[q | v | k]`` offset of ``x``."""
    model = bridge.wrap(build_tiny_model(examples_of(CodeGenAdapter).example_config()), tiny_tokenizer())
    attn = model.blocks[1].attn
    weight = attn.hf.qkv_proj.weight  # [3·m, m]
    m, n, d = model.cfg.d_model, model.cfg.n_heads, model.cfg.d_head
    per_part = n // 4
    for name, offset in (("W_Q", 0), ("W_V", 1), ("W_K", 2)):
        for h in range(n):
            part, index = divmod(h, per_part)
            start = part * (3 * m // 4) + offset * (m // 4) + index * d
            assert torch.equal(getattr(attn, name)[h], weight[start : start + d].T)


def test_codegen_head_inputs_reach_one_head(pair_for):
    """A patch of head 5's ``hook_q_input`` changes head 5's ``hook_q`` alone, to ``ln_1(patched) @ W_Q[5]``."""
    model = pair_for(CodeGenAdapter, "CodeGenForCausalLM").bridge
    tokens = torch.randint(1, 128, (1, 6), generator=torch.Generator().manual_seed(10))
    plain = model(tokens)
    model.set_use_split_qkv_input(True)
    try:
        torch.testing.assert_close(model(tokens), plain, atol=1e-5, rtol=0)
        _, clean = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0."))
        patched_input: list[torch.Tensor] = []

        def patch(x, hook):
            x = x.clone()
            x[:, :, 5] = x[:, :, 5] * 3.0 + 1.0
            patched_input.append(x[:, :, 5])
            return x

        with model.hooks(fwd_hooks=[("blocks.0.hook_q_input", patch)]):
            _, patched = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0.attn.hook_"))
    finally:
        model.set_use_split_qkv_input(False)
    others = [h for h in range(model.cfg.n_heads) if h != 5]
    torch.testing.assert_close(patched["q", 0][:, :, others], clean["q", 0][:, :, others], atol=1e-6, rtol=0)
    torch.testing.assert_close(patched["k", 0], clean["k", 0], atol=1e-6, rtol=0)
    attn = model.blocks[0].attn
    expected = model.hf_model.transformer.h[0].ln_1(patched_input[0]) @ attn.W_Q[5]
    torch.testing.assert_close(patched["q", 0][:, :, 5], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("adapter", [GPTJAdapter, CodeGenAdapter], ids=lambda a: a.__name__)
def test_process_weights_keeps_hfs_log_probs(adapter):
    """Folding the shared ``ln_1`` into q/k/v (CodeGen: the partitioned ``qkv_proj``) and ``fc_in``, and centring,
    keep the log-probabilities of an untouched copy of the HF model; ``ln_1`` is left with weight 1, bias 0."""
    hf_model = build_tiny_model(examples_of(adapter).example_config())
    sensitize(hf_model)
    reference = copy.deepcopy(hf_model)
    model = bridge.wrap(hf_model, tiny_tokenizer())
    model.process_weights()
    tokens = torch.randint(1, 128, (2, 9), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        expected = reference(tokens).logits.log_softmax(-1)
        got = model(tokens).log_softmax(-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    ln_1 = hf_model.transformer.h[0].ln_1
    assert torch.equal(ln_1.weight, torch.ones_like(ln_1.weight))
    assert torch.equal(ln_1.bias, torch.zeros_like(ln_1.bias))


# ----------------------------------------------------------------- refused configs and inputs


def test_codegen_heads_not_a_multiple_of_four_are_refused():
    """HF's CodeGen splits ``qkv_proj`` into 4 parts of whole heads; with 6 heads it cannot run, and bridge says so
    when wrapping rather than bridging a layout that does not exist."""
    hf_model = build_tiny_model(_config(CodeGenAdapter, n_embd=48, n_head=6))
    with pytest.raises(RuntimeError):
        hf_model(torch.tensor([[1, 2, 3]]))
    with pytest.raises(BridgeError, match=r"4 parts needs n_heads \(6\).*multiples"):
        bridge.wrap(hf_model, tiny_tokenizer())


@pytest.mark.parametrize(("adapter", "arch"), CAUSAL_LMS)
def test_inputs_longer_than_the_sinusoid_table_are_refused(pair_for, adapter, arch):
    model = pair_for(adapter, arch).bridge
    n_ctx = model.hf_model.config.n_positions
    assert model.cfg.n_ctx == n_ctx
    with pytest.raises(BadInputError, match=f"n_ctx={n_ctx}"):
        model(torch.ones(1, n_ctx + 1, dtype=torch.long))


def test_flash_attention_gptj_refuses_internal_hooks():
    """The internal hooks are computed with HF's eager arithmetic; a model set to another implementation says so."""
    hf_model = build_tiny_model(examples_of(GPTJAdapter).example_config())
    model = bridge.wrap(hf_model, tiny_tokenizer())
    hf_model.config._attn_implementation_internal = "flash_attention_2"  # what HF sets for a FlashAttention-2 load
    with pytest.raises(BridgeError, match="attn_implementation='eager'"):
        model.run_with_cache(torch.tensor([[1, 2, 3]]), names_filter=lambda n: n.endswith("hook_pattern"))
