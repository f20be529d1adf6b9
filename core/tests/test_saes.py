"""SAE splicing: SAELens-shaped SAEs, the context manager, hooks around the splice, and bad input."""

from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from public_api_adapters import GPT2Adapter
from torch import nn

import bridge
from bridge.analysis.saes import SAESpliceError, SplicedHookPoint
from bridge.kernel.errors import HookNameError, OptInHookError
from bridge.testing import make_pair
from bridge.testing.saes import TinySAE, spliced_reference

HOOK = "blocks.0.hook_mlp_out"
MODULE = "transformer.h.0.mlp"
D_MODEL = 32


class LensLikeSAE(TinySAE):
    """Shaped like a SAELens SAE: ``cfg.metadata.hook_name``, ``use_error_term`` and identity hook submodules
    its own code calls (``hook_sae_acts_pre`` on the pre-activation)."""

    def __init__(self, hook_name: str, d_in: int = D_MODEL, use_error_term: bool = False) -> None:
        super().__init__(d_in, 16, seed=1)
        self.cfg = SimpleNamespace(metadata=SimpleNamespace(hook_name=hook_name, hook_name_out=None))
        self.use_error_term = use_error_term
        for name in ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons"):
            setattr(self, name, nn.Identity())

    def encode(self, x):
        x = self.hook_sae_input(x)
        pre = self.hook_sae_acts_pre((x - self.b_dec) @ self.W_enc + self.b_enc)
        return self.hook_sae_acts_post(torch.relu(pre))

    def decode(self, acts):
        return self.hook_sae_recons(acts @ self.W_dec + self.b_dec)


@pytest.fixture(scope="module")
def gpt2_pair(tmp_path_factory):
    return make_pair(GPT2Adapter, directory=tmp_path_factory.mktemp("sae-gpt2"))


@pytest.fixture
def pair(gpt2_pair):
    yield gpt2_pair
    gpt2_pair.bridge.reset_saes()
    gpt2_pair.bridge.reset_hooks(including_permanent=True)


def test_saelens_shaped_sae_uses_its_hook_name_and_its_own_hook_modules(pair):
    model, tokens = pair.bridge, pair.tokens()
    sae = LensLikeSAE(HOOK)
    record = {}
    with torch.no_grad(), spliced_reference(pair.reference.get_submodule(MODULE), sae, record=record):
        expected = pair.reference_output(tokens)
    fired = []
    model.add_sae(sae)
    assert model.acts_to_saes == {HOOK: sae}
    names = [n for n in model.hook_dict if n.startswith(HOOK + ".")]
    assert names == [f"{HOOK}.hook_sae_{s}" for s in ("input", "acts_pre", "acts_post", "recons", "error", "output")]
    with torch.no_grad():
        out, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith(HOOK))
        record_names = [(lambda n: n.startswith(HOOK + "."), lambda t, hook: fired.append(hook.name))]
        model.run_with_hooks(tokens, fwd_hooks=record_names)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    pre = (record["input"] - sae.b_dec) @ sae.W_enc + sae.b_enc
    torch.testing.assert_close(cache[f"{HOOK}.hook_sae_acts_pre"], pre, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache[f"{HOOK}.hook_sae_acts_post"], record["acts"], atol=1e-5, rtol=1e-5)
    assert fired == [f"{HOOK}.hook_sae_{s}" for s in ("input", "acts_pre", "acts_post", "recons", "output")]
    assert all(type(getattr(sae, n)) is nn.Identity for n in ("hook_sae_input", "hook_sae_acts_pre"))  # put back


def test_patching_acts_pre_of_a_saelens_shaped_sae(pair):
    model, tokens = pair.bridge, pair.tokens()
    sae = LensLikeSAE(HOOK)

    def shift(pre, hook=None):
        return pre + 0.5

    with torch.no_grad():
        model.add_sae(sae)
        patched = model.run_with_hooks(tokens, fwd_hooks=[(f"{HOOK}.hook_sae_acts_pre", shift)])
        model.reset_saes()
        sae.hook_sae_acts_pre = nn.Module()
        sae.hook_sae_acts_pre.forward = shift
        with spliced_reference(pair.reference.get_submodule(MODULE), sae):
            expected = pair.reference_output(tokens)
    torch.testing.assert_close(patched, expected, atol=1e-4, rtol=1e-4)


def test_error_term_default_comes_from_the_sae_and_cfg_hook_name_is_read(pair):
    model, tokens = pair.bridge, pair.tokens()
    old_style = TinySAE(D_MODEL)
    old_style.cfg = SimpleNamespace(hook_name="blocks.1.hook_resid_pre")
    old_style.use_error_term = True
    with torch.no_grad():
        plain = model(tokens)
        out = model.run_with_saes(tokens, saes=[old_style, LensLikeSAE(HOOK, use_error_term=True)])
    torch.testing.assert_close(out, plain, atol=1e-6, rtol=0)
    assert model.acts_to_saes == {}


def test_hooks_on_the_spliced_point_see_the_models_activation_and_patch_the_sae_input(pair):
    model, tokens = pair.bridge, pair.tokens()
    sae = TinySAE(D_MODEL)
    double = lambda x, hook=None: 2 * x  # noqa: E731
    record = {}
    reference_mlp = pair.reference.get_submodule(MODULE)
    doubling = reference_mlp.register_forward_hook(lambda m, a, out: double(out))
    try:
        with torch.no_grad(), spliced_reference(reference_mlp, sae, record=record):
            expected = pair.reference_output(tokens)
    finally:
        doubling.remove()
    model.add_sae(sae, hook_name=HOOK)
    with torch.no_grad():
        out = model.run_with_hooks(tokens, fwd_hooks=[(HOOK, double)])
        _, cache = model.run_with_cache(tokens, names_filter=[HOOK, f"{HOOK}.hook_sae_input"])
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cache[HOOK], cache[f"{HOOK}.hook_sae_input"])
    torch.testing.assert_close(cache[HOOK], record["input"] / 2, atol=1e-5, rtol=1e-5)


def test_reset_hooks_keeps_the_sae_and_removes_hooks_on_its_points(pair):
    model, tokens = pair.bridge, pair.tokens()
    sae = TinySAE(D_MODEL)
    model.add_sae(sae, hook_name=HOOK)
    with torch.no_grad():
        spliced = model(tokens)
    model.add_hook(f"{HOOK}.hook_sae_acts_post", lambda t, hook: torch.zeros_like(t))
    model.reset_hooks()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), spliced)
    assert not model.hook_dict[f"{HOOK}.hook_sae_acts_post"].fwd_hooks
    model.add_perma_hook(f"{HOOK}.hook_sae_acts_post", lambda t, hook: None)
    model.reset_saes()
    assert f"{HOOK}.hook_sae_acts_post" not in model.hook_dict
    assert type(model.hook_dict[HOOK]) is bridge.HookPoint


def test_the_context_manager_restores_the_sae_it_replaced(pair):
    model, tokens = pair.bridge, pair.tokens()
    first, second = TinySAE(D_MODEL, seed=1), TinySAE(D_MODEL, seed=2)
    model.add_sae(first, hook_name=HOOK)
    with torch.no_grad():
        with_first = model(tokens)
        with model.saes([(HOOK, second)]):
            assert model.acts_to_saes == {HOOK: second}
            with_second = model(tokens)
        assert model.acts_to_saes == {HOOK: first}
        torch.testing.assert_close(model(tokens), with_first)
        assert (with_second - with_first).abs().max() > 1e-3
        with model.saes((HOOK, second), reset_saes_end=False):
            pass
    assert model.acts_to_saes == {HOOK: second}


def test_saes_come_off_when_the_forward_pass_raises(pair):
    model, tokens = pair.bridge, pair.tokens()
    with pytest.raises(ZeroDivisionError), model.saes([(HOOK, TinySAE(D_MODEL))]):
        model(tokens)
        raise ZeroDivisionError
    assert model.acts_to_saes == {} and HOOK + ".hook_sae_output" not in model.hook_dict


def test_run_with_cache_with_saes_returns_a_dict_when_asked(pair):
    model, tokens = pair.bridge, pair.tokens()
    with torch.no_grad():
        _, cache = model.run_with_cache_with_saes(
            tokens, saes=[(HOOK, TinySAE(D_MODEL))], names_filter=lambda n: "hook_sae" in n, return_cache_object=False
        )
    assert isinstance(cache, dict)
    assert sorted(cache) == sorted(f"{HOOK}.hook_sae_{s}" for s in ("input", "acts_post", "recons", "output"))
    assert cache[f"{HOOK}.hook_sae_acts_post"].shape == (2, 12, 16)


def test_an_sae_in_another_dtype_gives_back_the_activation_dtype(pair):
    model, tokens = pair.bridge, pair.tokens()
    sae64 = TinySAE(D_MODEL, dtype=torch.float64)
    record = {}
    with torch.no_grad():
        out = model.run_with_saes(tokens, saes=[(HOOK, sae64)])
        with spliced_reference(pair.reference.get_submodule(MODULE), sae64.float(), record=record):
            expected = pair.reference_output(tokens)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_generate_with_an_error_term_sae_is_unchanged(pair):
    model = pair.bridge
    kwargs = {"max_new_tokens": 4, "do_sample": False, "verbose": False}
    prompt = pair.tokens(batch=1, pos=5)
    plain = model.generate(prompt, **kwargs)
    with model.saes([(HOOK, TinySAE(D_MODEL))], use_error_term=True):
        assert torch.equal(model.generate(prompt, **kwargs), plain)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 3), pos=st.integers(1, 9), seed=st.integers(0, 50))
def test_any_shape_matches_the_reference(pair, batch, pos, seed):
    model, tokens = pair.bridge, pair.tokens(batch=batch, pos=pos, seed=seed)
    sae = TinySAE(D_MODEL, seed=seed)
    with torch.no_grad(), spliced_reference(pair.reference.get_submodule(MODULE), sae):
        expected = pair.reference_output(tokens)
    with torch.no_grad():
        out = model.run_with_saes(tokens, saes=[(HOOK, sae)])
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_bad_saes_are_refused_with_what_to_do(pair):
    model, tokens = pair.bridge, pair.tokens()
    with pytest.raises(SAESpliceError, match="no `encode` method"):
        model.add_sae(nn.Linear(2, 2), hook_name=HOOK)
    with pytest.raises(SAESpliceError, match=r"pass one, e\.g\."):
        model.add_sae(TinySAE(D_MODEL))
    with pytest.raises(HookNameError, match=r"blocks\.0\.hook_mlp_outt"):
        model.add_sae(TinySAE(D_MODEL), hook_name="blocks.0.hook_mlp_outt")
    with pytest.raises(OptInHookError, match="set_opt_in"):
        model.add_sae(TinySAE(D_MODEL), hook_name="blocks.0.attn.hook_result")
    transcoder = LensLikeSAE(HOOK)
    transcoder.cfg.metadata.hook_name_out = "blocks.0.hook_resid_post"
    with pytest.raises(SAESpliceError, match="transcoder"):
        model.add_sae(transcoder)
    model.add_sae(TinySAE(D_MODEL), hook_name=HOOK)
    with pytest.raises(SAESpliceError, match="hook point of a spliced SAE"):
        model.add_sae(TinySAE(16), hook_name=f"{HOOK}.hook_sae_acts_post")
    with pytest.raises(SAESpliceError, match="no SAE is spliced into"):
        model.reset_saes("blocks.1.hook_mlp_out")
    model.reset_saes()
    wrong = TinySAE(D_MODEL)
    wrong.decode = lambda acts: acts  # [..., d_sae], not the activation's shape
    with pytest.raises(SAESpliceError, match=r"decoded to \(2, 12, 16\).*\(2, 12, 32\)"):
        model.run_with_saes(tokens, saes=[(HOOK, wrong)])
    assert model.acts_to_saes == {}


def test_nothing_is_attached_without_an_sae(pair):
    model = pair.bridge
    assert not any(isinstance(p, SplicedHookPoint) for p in model.hook_dict.values())
    assert not any(a.attached for c in model.components() for a in c._attachments)
    model.add_sae(TinySAE(D_MODEL), hook_name=HOOK)
    assert isinstance(model.hook_dict[HOOK], SplicedHookPoint)
    assert any(a.attached for c in model.components() for a in c._attachments)
    model.reset_saes()
    assert not any(a.attached for c in model.components() for a in c._attachments)


def test_the_readme_example_runs_and_the_error_term_keeps_the_output(monkeypatch):
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "saes.md").read_text()
    section = text.split("## Splicing SAEs", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(root)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(block, "docs/saes.md", "exec"), namespace)
    model, sae, hook, cache = namespace["model"], namespace["sae"], namespace["hook"], namespace["cache"]
    assert cache[f"{hook}.hook_sae_acts_post"].shape == (1, 6, 512)
    assert model.acts_to_saes == {} and f"{hook}.hook_sae_acts_post" not in model.hook_dict
    with torch.no_grad():
        plain = model("t1 t2 t3 t1 t2")
        with model.saes([(hook, sae)], use_error_term=True):
            torch.testing.assert_close(model("t1 t2 t3 t1 t2"), plain, atol=1e-5, rtol=0)
    assert (namespace["ablated"] - plain).abs().max() > 0


def test_gradients_through_an_error_term_splice_equal_a_hand_written_splice(pair):
    """With ``use_error_term`` the model continues with ``recons + (x - decode(encode(x)))``, the error a constant:
    the gradient reaches the upstream activations through the SAE (not around it) and reaches the SAE's parameters.
    Both equal the gradients of the same splice written by hand as a torch hook on the reference."""
    model, tokens = pair.bridge, pair.tokens()
    sae = TinySAE(D_MODEL, 16, seed=3)

    def by_hand(_module, _args, out):
        recons = sae.decode(sae.encode(out))
        return recons + (out - recons).detach()

    handle = pair.reference.get_submodule(MODULE).register_forward_hook(by_hand)
    try:
        loss = pair.reference(tokens, labels=tokens).loss
        expected = torch.autograd.grad(loss, [*sae.parameters(), pair.reference.transformer.wte.weight])
    finally:
        handle.remove()
    with model.saes([(HOOK, sae)], use_error_term=True):
        loss = model(tokens, return_type="loss")
        got = torch.autograd.grad(loss, [*sae.parameters(), model.hf_model.transformer.wte.weight])
    for name, g, e in zip(["W_enc", "b_enc", "W_dec", "b_dec", "wte"], got, expected, strict=True):
        assert e.abs().max() > 1e-4, f"the hand-written splice gives {name} no gradient: the test would prove nothing"
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5, msg=name)
