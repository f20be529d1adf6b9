"""Legacy notebooks' calls against the legacy classes themselves: SAELens's ``HookedSAETransformer`` (a
``HookedTransformer``, from transformer-lens 3.9, which this venv has) on the same local GPT-2 weights as a Bridge.

``HookedTransformer.from_pretrained`` only takes official model names; here it is given the saved directory (its
config reader accepts a path; the name check is bypassed for that one call). Its default processing (fold the
norms, centre the writing weights and the unembedding, fold the value biases) is what
``enable_compatibility_mode()`` does on the Bridge, so every number is compared on processed weights: the Hooked SAE
Transformer tutorial's SAE splicing, the Main Demo's ``all_head_labels()``, ``accumulated_bias``, per-component
parameters, caching hooks, ``sample_datapoint`` and ``load_and_process_state_dict``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_lens import HookedSAETransformer, StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformers import AutoModelForCausalLM, AutoTokenizer

import bridge
from bridge.testing import examples_of, save_tiny_model
from bridge_gpt2 import GPT2Adapter

TOKENS = torch.tensor([[1, 5, 17, 42, 9, 77, 3, 11], [1, 8, 8, 100, 2, 64, 31, 7]])
HOOK_Z = "blocks.1.attn.hook_z"


def _saved(directory: Path, seed: int) -> Path:
    config = examples_of(GPT2Adapter).example_config()
    config.n_ctx = config.n_positions  # transformer-lens 3.9 reads GPT-2's n_ctx
    return save_tiny_model(config, directory, seed=seed)


def _hooked(directory: Path, monkeypatch: pytest.MonkeyPatch) -> HookedSAETransformer:
    import transformer_lens.loading_from_pretrained as loading

    official = loading.get_official_model_name
    monkeypatch.setattr(
        loading, "get_official_model_name", lambda name: name if Path(name).exists() else official(name)
    )
    hf = AutoModelForCausalLM.from_pretrained(directory)
    return HookedSAETransformer.from_pretrained(
        str(directory), hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(directory), device="cpu"
    )


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    return _saved(tmp_path_factory.mktemp("gpt2"), seed=0)


@pytest.fixture
def pair(gpt2_dir, monkeypatch):
    """``(bridge after enable_compatibility_mode(), HookedSAETransformer.from_pretrained)`` of the same weights."""
    ours = bridge.load(gpt2_dir)
    ours.enable_compatibility_mode()
    return ours, _hooked(gpt2_dir, monkeypatch)


def close(mine, reference, atol: float = 1e-5) -> None:
    torch.testing.assert_close(mine.detach().float(), reference.detach().float(), atol=atol, rtol=0)


def test_compatibility_mode_gives_hooked_transformers_logits(pair):
    ours, theirs = pair
    close(ours(TOKENS), theirs(TOKENS), atol=1e-4)
    close(ours("the cat sat on the mat"), theirs("the cat sat on the mat"), atol=1e-4)


def test_component_parameters_after_processing(pair):
    ours, theirs = pair
    close(ours.embed.W_E, theirs.embed.W_E)
    close(ours.pos_embed.W_pos, theirs.pos_embed.W_pos)
    close(ours.unembed.W_U, theirs.unembed.W_U)
    close(ours.unembed.b_U, theirs.unembed.b_U)
    close(ours.blocks[1].mlp.W_in, theirs.blocks[1].mlp.W_in)
    close(ours.blocks[0].attn.b_O, theirs.blocks[0].attn.b_O)
    # HookedTransformer replaces folded norms by LNPre, which has no w/b; bridge keeps the norm, now w=1, b=0
    assert not hasattr(theirs.blocks[0].ln1, "w")
    close(ours.blocks[0].ln1.w, torch.ones(ours.cfg.d_model))
    close(ours.blocks[0].ln1.b, torch.zeros(ours.cfg.d_model))


def test_head_labels_and_accumulated_bias(pair):
    ours, theirs = pair
    assert ours.all_head_labels() == theirs.all_head_labels()
    for layer, mlp_input in [(0, False), (1, True), (2, False)]:
        close(ours.accumulated_bias(layer, mlp_input=mlp_input), theirs.accumulated_bias(layer, mlp_input=mlp_input))


def test_caching_hooks_and_cache_all(pair):
    _ours, _theirs = pair
    caches = []
    for model in pair:
        store, fwd, _ = model.get_caching_hooks(lambda name: name.endswith("hook_resid_post"))
        model.run_with_hooks(TOKENS, fwd_hooks=fwd)
        everything: dict[str, torch.Tensor] = {}
        model.cache_all(everything)
        model(TOKENS)
        model.reset_hooks()
        caches.append((store, everything))
    (mine, all_mine), (reference, all_reference) = caches
    assert set(mine) == set(reference)
    for name in reference:
        close(mine[name], reference[name], atol=1e-4)
    for name in ("blocks.0.attn.hook_pattern", "blocks.1.mlp.hook_post", "ln_final.hook_scale"):
        close(all_mine[name], all_reference[name], atol=1e-4)


def test_sample_datapoint_on_the_same_dataset(pair):
    texts = [f"the cat {i} sat" for i in range(30)]
    samples = []
    for model in pair:
        model.dataset = [{"text": text} for text in texts]
        np.random.seed(3)
        samples.append((model.sample_datapoint(), model.sample_datapoint(tokenize=True)))
    (text, tokens), (their_text, their_tokens) = samples
    assert text == their_text
    assert torch.equal(tokens, their_tokens)


def test_load_and_process_state_dict(pair, tmp_path, monkeypatch):
    """Loading other weights and processing them: HF-named for the Bridge, TransformerLens-named for the legacy
    class (its own layout); both then compute the other checkpoint's processed logits."""
    ours, theirs = pair
    other_dir = _saved(tmp_path / "other", seed=4)
    other = _hooked(other_dir, monkeypatch)
    hf_other = AutoModelForCausalLM.from_pretrained(other_dir)
    ours.load_and_process_state_dict(hf_other.state_dict())
    close(ours(TOKENS), other(TOKENS), atol=1e-4)
    with pytest.raises(bridge.BridgeError, match="TransformerLens parameter names"):
        ours.load_and_process_state_dict(theirs.state_dict())


def _sae(model: bridge.Bridge, seed: int = 0) -> StandardSAE:
    torch.manual_seed(seed)
    d_in = model.cfg.n_heads * model.cfg.d_head
    metadata = SAEMetadata(hook_name=HOOK_Z)  # a hook_z SAE flattens heads, as the tutorial's pretrained ones do
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=24, reshape_activations="hook_z", metadata=metadata))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    return sae


@pytest.mark.parametrize("use_error_term", [False, True])
def test_run_with_saes_and_its_cache(pair, use_error_term):
    """The Hooked SAE Transformer tutorial's ``run_with_saes`` and ``run_with_cache_with_saes`` on ``hook_z``."""
    ours, _theirs = pair
    sae = _sae(ours)
    outputs = []
    for model in pair:
        logits = model.run_with_saes(TOKENS, saes=[sae], use_error_term=use_error_term)
        _, cache = model.run_with_cache_with_saes(TOKENS, saes=[sae], use_error_term=use_error_term)
        outputs.append((logits, cache[f"{HOOK_Z}.hook_sae_acts_post"], cache[f"{HOOK_Z}.hook_sae_recons"]))
    for mine, reference in zip(*outputs, strict=True):
        close(mine, reference, atol=1e-4)
    if use_error_term:  # the error term restores the activation: the model's own logits
        close(outputs[0][0], ours(TOKENS), atol=1e-4)


def test_feature_ablation_with_run_with_hooks_with_saes(pair):
    """The tutorial's feature-ablation loop: zero one SAE feature at one position, through ``hook_sae_acts_post``."""

    def ablate(acts, hook, pos, feature):
        acts[:, pos, feature] = 0.0
        return acts

    ours, _ = pair
    sae = _sae(ours, seed=1)
    results = []
    for model in pair:
        results.append(
            torch.stack(
                [
                    model.run_with_hooks_with_saes(
                        TOKENS,
                        saes=sae,
                        fwd_hooks=[(f"{HOOK_Z}.hook_sae_acts_post", partial(ablate, pos=5, feature=f))],
                    )[:, -1]
                    for f in range(4)
                ]
            )
        )
    close(*results, atol=1e-4)


def test_add_sae_acts_to_saes_and_reset(pair):
    """``add_sae`` / ``acts_to_saes`` / plain ``run_with_cache`` with an attached SAE / ``reset_saes``, and
    ``set_use_split_qkv_input`` with a ``v_input`` hook (the tutorial's path-patching cell)."""
    ours, _ = pair
    sae = _sae(ours, seed=2)
    outputs = []
    for model in pair:
        model.add_sae(sae)
        assert list(model.acts_to_saes) == [HOOK_Z]
        logits, cache = model.run_with_cache(TOKENS)
        model.reset_saes()
        assert model.acts_to_saes == {}
        model.set_use_split_qkv_input(True)

        def shift(v_input, hook):
            v_input[:, 3, 1] = v_input[:, 3, 1] * 0.5
            return v_input

        patched = model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.1.hook_v_input", shift)])
        model.set_use_split_qkv_input(False)
        outputs.append((logits, cache[f"{HOOK_Z}.hook_sae_acts_post"], patched))
    for mine, reference in zip(*outputs, strict=True):
        close(mine, reference, atol=1e-4)
