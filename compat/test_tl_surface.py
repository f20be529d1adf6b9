"""The rest of the TransformerLens surface the tutorials call, the same call on a Bridge and on TransformerLens
4.3.0's own bridge of the same weights: per-component parameters (raw and processed), ``tl_parameters``, the
TransformerLens 4 hook names (``utils.get_act_name("in", l)``), cache keys with tensor/numpy layers, caching hooks,
head labels, accumulated biases, refactored attention matrices, permanent hooks on a hook point, and tokens with
``default_prepend_bos``."""

from functools import partial

import numpy as np
import pytest
import torch
from transformer_lens import utilities as utils

from compat.conftest import assert_same, build_pair, logit_diff

COMPONENT_PARAMETERS = [
    "embed.W_E",
    "unembed.W_U",
    "unembed.b_U",
    "ln_final.w",
    "blocks.0.ln1.w",
    "blocks.1.ln2.w",
    "blocks.0.attn.W_Q",
    "blocks.1.attn.W_K",
    "blocks.1.attn.W_V",
    "blocks.0.attn.W_O",
    "blocks.1.attn.b_O",
    "blocks.0.mlp.W_in",
    "blocks.1.mlp.W_out",
    "blocks.1.mlp.b_out",
]
LAYER_NORM_ONLY = ["pos_embed.W_pos", "ln_final.b", "blocks.0.ln1.b", "blocks.1.ln2.b", "blocks.0.mlp.b_in"]


def _read(model, path: str):
    value = model
    for part in path.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)
    return value


def _parameters(pair) -> list[tuple[str, str]]:
    """``(our path, TransformerLens's path)``: the same except for grouped keys and values (Llama here), where a
    component's ``W_K``/``W_V`` are ``[n_heads, ...]`` as in ``HookedTransformer`` and the raw ``[n_kv_heads, ...]``
    ones, which TransformerLens 4's components give, are ``_W_K``/``_W_V``."""
    paths = COMPONENT_PARAMETERS + (LAYER_NORM_ONLY if pair.family == "gpt2" else [])
    grouped = pair.ours.cfg.n_key_value_heads != pair.ours.cfg.n_heads
    return [(path.replace(".W_", "._W_") if grouped and path[-3:] in ("W_K", "W_V") else path, path) for path in paths]


def _compare_parameters(pair, atol: float) -> None:
    for ours, theirs in _parameters(pair):
        mine, reference = _read(pair.ours, ours).detach(), _read(pair.theirs, theirs)
        if reference is None:  # TransformerLens 4 gives None for a bias the HF module lacks; bridge gives zeros
            assert not mine.any(), ours
            continue
        assert_same(mine, reference.detach(), atol=atol)


def test_component_parameters_match(pair):
    _compare_parameters(pair, atol=1e-6)


def test_processed_component_parameters_match(processed_pair):
    """After compatibility mode (both sides): the folded, centred weights the direct-logit-attribution half reads."""
    _compare_parameters(processed_pair, atol=1e-5)


@pytest.mark.parametrize("view", ["W_U", "b_U", "W_E", "W_O", "b_O", "W_in"])
def test_model_wide_views_match(processed_pair, view):
    mine = getattr(processed_pair.ours, view).detach()
    try:
        reference = getattr(processed_pair.theirs, view).detach()
    except AttributeError:  # TransformerLens 4 has no stacked bias for a bias-free model (Llama's b_O): zeros here
        assert not mine.any()
        return
    assert_same(mine, reference, atol=1e-5)


def test_hooks_context_matches(pair):
    """``with model.hooks(fwd_hooks=[...]):`` as the SAELens tutorials use it."""

    def run(model):
        with model.hooks(fwd_hooks=[(utils.get_act_name("resid_post", 0), lambda x, hook: x * 0.5)]):
            inside = model(pair.clean)
        return inside, model(pair.clean)

    assert_same(*pair.both(run))


def test_full_ov_circuit_through_the_component_embeddings(processed_pair):
    """The Main Demo's ``model.embed.W_E @ model.OV @ model.unembed.W_U``, compared on its eigenvalue magnitudes."""

    def circuit(model):
        full = model.embed.W_E @ model.OV[1, 2] @ model.unembed.W_U
        return full.S.detach()

    assert_same(*processed_pair.both(circuit), atol=1e-3)


def test_tl_parameters_match(pair):
    mine, reference = pair.both(lambda model: {k: v.detach() for k, v in model.tl_named_parameters()})
    assert list(mine) == list(reference)  # the Main Demo prints these names in a loop
    for name, value in reference.items():
        assert_same(mine[name], value, atol=1e-6)


def test_all_head_labels_match(pair):
    mine, reference = pair.both(lambda model: model.all_head_labels)
    assert list(mine) == reference


@pytest.mark.parametrize(("layer", "mlp_input"), [(0, False), (1, True), (2, False)])
def test_accumulated_bias_matches(processed_pair, layer, mlp_input):
    assert_same(*processed_pair.both(lambda model: model.accumulated_bias(layer, mlp_input=mlp_input)), atol=1e-6)


@pytest.mark.parametrize("name", ["in", "out"])
def test_get_act_name_in_and_out_patch_the_same_stream(pair, name):
    """The Main Demo's residual patching loop with ``utils.get_act_name("in", layer)``."""

    def patched(model):
        _, clean = model.run_with_cache(pair.clean)

        def patch(resid, hook, position):
            resid[:, position] = clean[hook.name][:, position]
            return resid

        act = utils.get_act_name(name, 1)
        return torch.stack(
            [
                logit_diff(model.run_with_hooks(pair.corrupted, fwd_hooks=[(act, partial(patch, position=p))]))
                for p in range(pair.clean.shape[1])
            ]
        )

    assert_same(*pair.both(patched))


@pytest.mark.parametrize("layer", [torch.tensor(1), np.int64(1), torch.tensor(0), np.int32(-1)])
def test_cache_keys_with_tensor_and_numpy_layers(pair, layer):
    """The Exploratory demo's attention helper indexes ``cache["attn", layer]`` with a tensor layer."""
    assert_same(*pair.both(lambda model: model.run_with_cache(pair.clean)[1]["attn", layer]))


def test_get_caching_hooks_match(pair):
    def cached(model):
        store, fwd, _ = model.get_caching_hooks(lambda name: name.endswith(("hook_resid_post", "hook_pattern")))
        model.run_with_hooks(pair.clean, fwd_hooks=fwd)
        return {key: store[key] for key in sorted(store)}

    mine, reference = pair.both(cached)
    assert set(mine) == {key for key in reference if key in mine} and mine
    for key, value in mine.items():
        assert_same(value, reference[key])


def test_permanent_hook_point_ablation_then_run_with_cache(processed_pair):
    """The Exploratory demo's ablation cell: ``blocks[l].attn.hook_z.add_hook(fn)``, then ``run_with_cache``."""

    def ablated(model):
        def zero_head(z, hook):
            z = z.clone()
            z[:, -1, 1] = 0
            return z

        model.blocks[1].attn.hook_z.add_hook(zero_head)
        try:
            logits, cache = model.run_with_cache(processed_pair.clean)
            return logits, cache["ln_final.hook_scale"], cache.stack_head_results(layer=-1, pos_slice=-1)
        finally:
            model.reset_hooks(including_permanent=True)
            model.blocks[1].attn.hook_z.remove_hooks("both", including_permanent=True)

    assert_same(*processed_pair.both(ablated))


def test_refactored_models_match(refactored_pair):
    """``enable_compatibility_mode(refactor_factored_attn_matrices=True)`` (the Exploratory demo's load): the same
    logits, circuits and per-head attributions; the factors themselves agree up to the sign of each singular
    direction, which an SVD does not fix."""
    pair = refactored_pair
    assert_same(*pair.both(lambda model: model(pair.clean)))
    assert_same(*pair.both(lambda model: model.OV.AB.detach()), atol=1e-4)
    assert_same(*pair.both(lambda model: model.QK.AB.detach()), atol=1e-4)
    assert_same(*pair.both(lambda model: model.W_O.detach().abs()), atol=1e-4)
    assert_same(*pair.both(lambda model: model.b_O.detach()), atol=1e-5)

    def attributions(model):
        _, cache = model.run_with_cache(pair.clean)
        return cache.stack_head_results(layer=-1, pos_slice=-1)

    assert_same(*pair.both(attributions), atol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_refactor_refusal_matches(family, tmp_path_factory):
    """Rotary models: TransformerLens asserts, bridge raises a ``WeightProcessingError``; GPT-2 works in both."""
    pair = build_pair(family, tmp_path_factory.mktemp(family))
    if family == "gpt2":
        return
    with pytest.raises(AssertionError, match="rotary"):
        pair.theirs.process_weights(refactor_factored_attn_matrices=True)
    with pytest.raises(Exception, match="rotary"):
        pair.ours.process_weights(refactor_factored_attn_matrices=True)


def test_default_prepend_bos_false_matches_transformer_lens_tokens(pair, tmp_path_factory):
    """With ``default_prepend_bos=False`` bridge tokenizes text as TransformerLens 4.3 does on families where it
    prepends no BOS; the default (True) matches it on those where it does (GPT-2, Llama here)."""
    text = ["the cat sat on the mat", "a b"]  # padded logits are not compared: the padding positions differ
    assert pair.theirs.cfg.default_prepend_bos is True and pair.ours.cfg.default_prepend_bos is True
    assert_same(*pair.both(lambda model: model.to_tokens(text)))
    assert_same(*pair.both(lambda model: model(text[0])))
    no_bos = build_pair(pair.family, tmp_path_factory.mktemp("no-bos"), processed="no-bos", default_prepend_bos=False)
    no_bos.theirs.cfg.default_prepend_bos = False
    assert_same(*no_bos.both(lambda model: model.to_tokens(text)))
    assert_same(*no_bos.both(lambda model: model(text[0])))


@pytest.mark.parametrize("family", ["neox", "bloom", "qwen2"])
def test_families_where_transformer_lens_prepends_no_bos(family, tmp_path):
    """The BOS table of docs/transformerlens.md: TransformerLens 4.3 defaults to no BOS on these families, bridge to
    a BOS; ``bridge.load(..., default_prepend_bos=False)`` gives TransformerLens's tokens and logits on text."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import bridge
    from bridge.testing import examples_of, save_tiny_model
    from bridge_alibi import BloomAdapter
    from bridge_gpt2 import GPTNeoXAdapter
    from bridge_llama import Qwen2Adapter

    adapter = {"neox": GPTNeoXAdapter, "bloom": BloomAdapter, "qwen2": Qwen2Adapter}[family]
    config = examples_of(adapter).example_config()
    config.vocab_size = 2000
    save_tiny_model(config, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    theirs = TransformerBridge.boot_transformers(
        str(tmp_path), hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(tmp_path)
    )
    assert theirs.cfg.default_prepend_bos is False
    assert bridge.load(tmp_path).cfg.default_prepend_bos is True
    ours = bridge.load(tmp_path, attn_implementation="eager", default_prepend_bos=False)
    text = ["the cat sat on the mat", "a b"]
    assert_same(ours.to_tokens(text), theirs.to_tokens(text))
    assert_same(ours(text[0]), theirs(text[0]))
