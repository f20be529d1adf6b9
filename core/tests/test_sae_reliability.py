"""SAE splicing under bad or unusual input: aliases and filters as hook names, a splice that fails half-way,
temporary SAEs over permanent ones with hooks on their latents, and SAEs whose width does not fit the hook.

References: the model's own output with no SAE (what must come back after an error or ``reset_saes``), and
the output with the same SAE spliced under the canonical name."""

from types import SimpleNamespace

import pytest
import torch
from public_api_adapters import GPT2Adapter

from bridge.analysis.saes import SAESpliceError, SAESplicing
from bridge.testing import make_pair
from bridge.testing.saes import TinySAE

HOOK = "blocks.0.hook_mlp_out"
D_MODEL = 32


@pytest.fixture(scope="module")
def gpt2_pair(tmp_path_factory):
    return make_pair(GPT2Adapter, directory=tmp_path_factory.mktemp("sae-reliability"))


@pytest.fixture
def pair(gpt2_pair):
    model = gpt2_pair.bridge
    yield gpt2_pair
    model.reset_saes()
    model.reset_hooks(including_permanent=True)
    model.set_use_split_qkv_input(False)


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


def assert_nothing_spliced(model, tokens, clean):
    assert model.acts_to_saes == {}
    assert not any(".hook_sae_" in name for name in model.hook_dict)
    torch.testing.assert_close(logits(model, tokens), clean, atol=0, rtol=0)


# ----------------------------------------------------------------------- item 1: aliases, filters, transactions


def test_transformer_lens_4_spelling_splices_at_the_canonical_hook_point(pair):
    model, tokens = pair.bridge, pair.tokens()
    clean = logits(model, tokens)
    model.set_use_split_qkv_input(True)
    sae = TinySAE(D_MODEL, seed=3)
    model.add_sae(sae, hook_name="blocks.0.hook_q_input")
    canonical = logits(model, tokens)
    model.reset_saes()
    model.add_sae(sae, hook_name="blocks.0.attn.hook_q_input")  # TransformerLens 4's spelling of the same point
    assert list(model.acts_to_saes) == ["blocks.0.hook_q_input"]
    assert "blocks.0.hook_q_input.hook_sae_acts_post" in model.hook_dict
    torch.testing.assert_close(logits(model, tokens), canonical, atol=0, rtol=0)
    model.reset_saes("blocks.0.attn.hook_q_input")  # either spelling removes it
    model.set_use_split_qkv_input(False)
    assert_nothing_spliced(model, tokens, clean)


def test_a_filter_selecting_one_hook_point_splices_there_and_several_are_refused(pair):
    model, tokens = pair.bridge, pair.tokens()
    clean = logits(model, tokens)
    sae = TinySAE(D_MODEL, seed=4)
    model.add_sae(sae, hook_name=lambda name: name == HOOK)
    assert list(model.acts_to_saes) == [HOOK]
    model.reset_saes()
    with pytest.raises(SAESpliceError, match=r"selects 2 hook points.*blocks\.0\.hook_mlp_out"):
        model.add_sae(sae, hook_name=lambda name: name.endswith("hook_mlp_out"))
    assert_nothing_spliced(model, tokens, clean)
    with pytest.raises(SAESpliceError, match="selects no hook point"):
        model.add_sae(sae, hook_name=lambda name: False)
    assert_nothing_spliced(model, tokens, clean)


def test_temporary_saes_under_an_alias_are_removed_at_exit(pair):
    model, tokens = pair.bridge, pair.tokens()
    model.set_use_split_qkv_input(True)
    clean = logits(model, tokens)
    sae = TinySAE(D_MODEL, seed=5)
    with model.saes([("blocks.0.attn.hook_v_input", sae)]):
        assert list(model.acts_to_saes) == ["blocks.0.hook_v_input"]
    model.run_with_saes(tokens, saes=[("blocks.0.attn.hook_v_input", sae)])
    assert_nothing_spliced(model, tokens, clean)


def test_a_splice_failing_half_way_leaves_nothing_attached(pair, monkeypatch):
    model, tokens = pair.bridge, pair.tokens()
    clean = logits(model, tokens)

    def broken(self, after, points):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(SAESplicing, "_insert_points", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        model.add_sae(TinySAE(D_MODEL), hook_name=HOOK)
    monkeypatch.undo()
    assert type(model.hook_dict[HOOK]).__name__ == "HookPoint"
    assert_nothing_spliced(model, tokens, clean)


def test_a_failing_replacement_keeps_the_sae_that_was_there(pair, monkeypatch):
    model, tokens = pair.bridge, pair.tokens()
    clean = logits(model, tokens)
    first = TinySAE(D_MODEL, seed=6)
    model.add_sae(first, hook_name=HOOK)
    with_first = logits(model, tokens)
    insert = SAESplicing._insert_points
    calls = []

    def fails_once(self, after, points):  # the new SAE's points cannot go in; putting the old ones back works
        calls.append(after)
        if len(calls) == 1:
            raise ZeroDivisionError
        insert(self, after, points)

    monkeypatch.setattr(SAESplicing, "_insert_points", fails_once)
    with pytest.raises(ZeroDivisionError):
        model.add_sae(TinySAE(D_MODEL, seed=7), hook_name=HOOK)
    monkeypatch.undo()
    assert model.acts_to_saes == {HOOK: first}
    torch.testing.assert_close(logits(model, tokens), with_first, atol=0, rtol=0)
    model.reset_saes()
    assert_nothing_spliced(model, tokens, clean)


# ----------------------------------------------------------------------- item 8: temporary over permanent


def zero_latent(acts, hook):  # acts: [batch, pos, d_sae]
    acts = acts.clone()
    acts[..., 3] = 0
    return acts


@pytest.mark.parametrize("how", ["saes", "run_with_saes", "nested"])
def test_a_temporary_sae_puts_back_exactly_the_permanent_one_with_its_latent_hooks(pair, how):
    model, tokens = pair.bridge, pair.tokens()
    permanent = TinySAE(D_MODEL, seed=8)
    model.add_sae(permanent, hook_name=HOOK)
    handles = model.add_hook(f"{HOOK}.hook_sae_acts_post", zero_latent, is_permanent=True)
    before = logits(model, tokens)
    point = model.hook_dict[f"{HOOK}.hook_sae_acts_post"]
    temporary = TinySAE(D_MODEL, seed=9)
    if how == "saes":
        with model.saes([(HOOK, temporary)]):
            assert model.acts_to_saes == {HOOK: temporary}
            assert not model.hook_dict[f"{HOOK}.hook_sae_acts_post"].fwd_hooks
    elif how == "run_with_saes":
        model.run_with_saes(tokens, saes=[(HOOK, temporary)])
    else:
        with model.saes([(HOOK, temporary)]), model.saes([(HOOK, TinySAE(D_MODEL, seed=10))]):
            pass
    assert model.acts_to_saes == {HOOK: permanent}
    assert model.hook_dict[f"{HOOK}.hook_sae_acts_post"] is point
    assert point.fwd_hooks == handles
    torch.testing.assert_close(logits(model, tokens), before, atol=0, rtol=0)


# ----------------------------------------------------------------------- item 17: SAE width against the hook


class SizedSAE(TinySAE):
    def __init__(self, d_in, hook_name=None):
        super().__init__(d_in, 8)
        self.cfg = SimpleNamespace(d_in=d_in, metadata=SimpleNamespace(hook_name=hook_name))


def test_an_sae_of_the_wrong_width_is_refused_at_add_sae(pair):
    model, tokens = pair.bridge, pair.tokens()
    clean = logits(model, tokens)
    with pytest.raises(SAESpliceError, match=r"SizedSAE.*d_in=16.*'blocks\.0\.hook_mlp_out'.*32"):
        model.add_sae(SizedSAE(16), hook_name=HOOK)
    with pytest.raises(SAESpliceError, match=r"d_in=16"):  # no cfg: the width of W_enc
        model.add_sae(TinySAE(16), hook_name="blocks.1.hook_resid_post")
    with pytest.raises(SAESpliceError, match=r"d_in=32.*'blocks\.0\.mlp\.hook_post'.*128"):
        model.run_with_saes(tokens, saes=[("blocks.0.mlp.hook_post", SizedSAE(32))])
    assert_nothing_spliced(model, tokens, clean)


def test_a_width_known_only_at_run_time_fails_naming_the_sae_and_the_hook(pair):
    model, tokens = pair.bridge, pair.tokens()
    clean = logits(model, tokens)
    sae = TinySAE(5)
    model.add_sae(sae, hook_name="blocks.0.attn.hook_pattern")  # [b, h, q, k]: the width is the sequence length
    with pytest.raises(SAESpliceError, match=r"TinySAE on 'blocks\.0\.attn\.hook_pattern'.*"):
        logits(model, tokens)
    model.reset_saes()
    assert_nothing_spliced(model, tokens, clean)


def test_hook_z_saes_read_the_heads_flattened(pair):
    """SAELens trains ``hook_z`` SAEs on ``[..., n_heads · d_head]``; the splice flattens and unflattens the heads."""
    model, tokens = pair.bridge, pair.tokens()
    n_heads, d_head = model.cfg.n_heads, model.cfg.d_head
    sae = SizedSAE(n_heads * d_head)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
    z = cache["blocks.0.attn.hook_z"]  # [b, p, h, d]
    flat = z.flatten(-2)
    expected = sae.decode(sae.encode(flat)).unflatten(-1, (n_heads, d_head))
    with torch.no_grad():
        _, spliced = model.run_with_cache_with_saes(
            tokens, saes=[("blocks.0.attn.hook_z", sae)], names_filter=lambda n: n.startswith("blocks.0.attn.hook_z")
        )
    torch.testing.assert_close(spliced["blocks.0.attn.hook_z.hook_sae_output"], expected, atol=1e-6, rtol=1e-6)
    assert spliced["blocks.0.attn.hook_z.hook_sae_acts_post"].shape == (*z.shape[:2], 8)
