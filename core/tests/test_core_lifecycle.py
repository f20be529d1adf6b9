"""Lifecycle of a bridge on a tiny GPT-2: ownership, detach/unwrap, copies, pickling, checkpointing,
threads, torch module hooks on hook points, token-type embeddings, bf16 norms.

References are independent: a separate, never-bridged HF model loaded from the same files, its own
outputs, plain torch hooks on it, and autograd."""

import copy
import gc
import io
import pickle
import threading
import weakref

import pytest
import torch
from public_api_adapters import GPT2Adapter

import bridge
from bridge import BridgeError
from bridge.testing import build_tiny_model

TOKENS = torch.tensor([[0, 5, 6, 7, 8, 9]])


def _hf(gpt2_dir, **kwargs):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(gpt2_dir, **kwargs).eval()


def _is_plain(hf_model) -> bool:
    """Nothing of a bridge is left: every forward is the module's own, every torch hook does nothing,
    the attention implementation is an ordinary one."""
    for module in hf_model.modules():
        forward = module.__dict__.get("forward")
        bound_to = getattr(forward, "__self__", None)
        if forward is not None and not (bound_to is module and forward.__func__ is type(module).forward):
            return False
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        if any(hook(module, (torch.zeros(1),), torch.zeros(1)) is not None for hook in hooks):
            return False
    return type(hf_model.config._attn_implementation) is str and hf_model.config._attn_implementation != "bridge"


def _scale_head(t, hook):
    t[:, :, 1] *= 0.5


# ----------------------------------------------------------------------------------------- ownership


def test_a_model_is_wrapped_once_and_unwrap_takes_it_back(gpt2_dir):
    hf = _hf(gpt2_dir)
    first = bridge.wrap(hf)
    with pytest.raises(BridgeError, match=r"bridge\.unwrap\(hf_model\)"):
        bridge.wrap(hf)
    bridge.unwrap(hf)
    with pytest.raises(BridgeError, match="detached"):
        first(TOKENS)
    second = bridge.wrap(hf)
    third = bridge.wrap(hf, replace=True)
    with pytest.raises(BridgeError, match="detached"):
        second.add_hook("hook_embed", lambda t, hook: None)
    torch.testing.assert_close(third(TOKENS), _hf(gpt2_dir)(TOKENS).logits, atol=1e-5, rtol=0)


def test_a_dropped_bridge_gives_the_model_back(gpt2_dir):
    hf = _hf(gpt2_dir)
    model = bridge.wrap(hf)
    model.add_hook("blocks.0.attn.hook_z", lambda t, hook: t * 0, is_permanent=True)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    assert _is_plain(hf)
    torch.testing.assert_close(hf(TOKENS).logits, _hf(gpt2_dir)(TOKENS).logits, atol=1e-5, rtol=0)
    bridge.wrap(hf)  # not refused


def test_detach_leaves_no_finalizer_behind(gpt2_dir):
    hf = _hf(gpt2_dir)
    bridge.wrap(hf).detach()
    before = len(weakref.finalize._registry)
    for _ in range(20):
        bridge.wrap(hf).detach()
    assert len(weakref.finalize._registry) <= before


def test_a_detached_bridge_refuses_to_run_or_hook(gpt2):
    gpt2.detach()
    for call in (
        lambda: gpt2(TOKENS),
        lambda: gpt2.run_with_cache(TOKENS),
        lambda: gpt2.add_hook("hook_embed", lambda t, hook: None),
        lambda: gpt2.run_with_hooks(TOKENS, fwd_hooks=[("hook_embed", lambda t, hook: None)]),
        lambda: gpt2.generate(TOKENS, max_new_tokens=2, verbose=False),
    ):
        with pytest.raises(BridgeError, match=r"detached.*bridge\.wrap"):
            call()
    gpt2.detach()  # idempotent


def test_models_sharing_a_config_are_wrapped_independently(gpt2_dir):
    a = _hf(gpt2_dir)
    b = build_tiny_model(a.config, seed=3)  # same config object
    assert b.config is a.config
    reference_b = copy.deepcopy(b)
    model_a = bridge.wrap(a)
    pattern_b = []
    model_b = bridge.wrap(b)  # not refused
    model_a.detach()
    _, cache = model_b.run_with_cache(TOKENS, names_filter=lambda n: n.endswith("hook_pattern"))
    pattern_b.append(cache["pattern", 0])
    assert pattern_b[0].shape == (1, 4, 6, 6)
    torch.testing.assert_close(model_b(TOKENS), reference_b(TOKENS).logits, atol=1e-5, rtol=0)
    model_b.detach()
    assert a.config._attn_implementation == "sdpa"


def test_two_components_claiming_one_module_is_a_build_error(gpt2_dir):
    from bridge import BlockSpec, ComponentMap, Spec
    from bridge.kernel.components import Norm

    class Clashing(GPT2Adapter):
        def component_map(self, cfg):
            cmap = super().component_map(cfg)
            children = dict(cmap.block.children) | {"ln2": Spec(Norm, "ln_1")}
            return ComponentMap(
                embed=cmap.embed,
                pos_embed=cmap.pos_embed,
                blocks=cmap.blocks,
                block=BlockSpec(cmap.block.kind, children, cmap.block.extra_paths),
                ln_final=cmap.ln_final,
            )

    hf = _hf(gpt2_dir)
    with pytest.raises(BridgeError, match=r"Clashing.*transformer\.h\.0\.ln_1"):
        bridge.wrap(hf, adapter=Clashing)
    assert _is_plain(hf)
    bridge.wrap(hf)  # the failed build left nothing behind


# --------------------------------------------------------------------------------------- attention


def test_switching_the_attention_implementation_under_a_bridge_is_detected(gpt2_dir):
    hf = _hf(gpt2_dir)
    model = bridge.wrap(hf)
    hf.set_attn_implementation("eager")
    with pytest.raises(BridgeError, match="set_attn_implementation"):
        model.run_with_cache(TOKENS, names_filter="blocks.0.attn.hook_pattern")
    model.set_attn_implementation("eager")
    _, cache = model.run_with_cache(TOKENS, names_filter="blocks.0.attn.hook_pattern")
    reference = _hf(gpt2_dir, attn_implementation="eager")(TOKENS, output_attentions=True).attentions[0]
    torch.testing.assert_close(cache["pattern", 0], reference, atol=1e-6, rtol=0)
    model.detach()
    assert hf.config._attn_implementation == "eager"


# ------------------------------------------------------------------------------------------ copies


@pytest.mark.parametrize("with_hooks", [False, True])
def test_deepcopy_of_a_bridged_hf_model_is_a_plain_hf_model(gpt2_dir, with_hooks):
    hf = _hf(gpt2_dir)
    model = bridge.wrap(hf)
    if with_hooks:
        model.add_hook("blocks.0.attn.hook_z", _scale_head, is_permanent=True)
        model.add_hook("blocks.1.ln2.hook_scale", lambda t, hook: None, is_permanent=True)
        model.add_hook("blocks.1.hook_resid_mid", lambda t, hook: None, is_permanent=True)
    clone = copy.deepcopy(hf)
    assert _is_plain(clone)
    torch.testing.assert_close(clone(TOKENS).logits, _hf(gpt2_dir)(TOKENS).logits, atol=1e-5, rtol=0)
    clone_bridge = bridge.wrap(clone)  # a copy is not wrapped
    seen = []
    clone_bridge.add_hook("blocks.0.attn.hook_pattern", lambda t, hook: seen.append("clone"))
    model.add_hook("blocks.0.attn.hook_pattern", lambda t, hook: seen.append("original"))
    clone_bridge(TOKENS)
    assert seen == ["clone"]
    assert bridge.kernel.ownership.owner(hf) is model and bridge.kernel.ownership.owner(clone) is clone_bridge


def test_deepcopy_of_a_bridge_is_an_independent_bridge(gpt2):
    gpt2.add_hook("blocks.0.attn.hook_z", _scale_head, is_permanent=True)
    gpt2.set_use_attn_result(True)
    clone = copy.deepcopy(gpt2)
    assert clone.hf_model is not gpt2.hf_model
    assert clone.hook_dict["blocks.0.attn.hook_result"].enabled
    torch.testing.assert_close(clone(TOKENS), gpt2(TOKENS), atol=0, rtol=0)  # same permanent hook, same weights
    with torch.no_grad():
        clone.hf_model.transformer.h[0].attn.c_proj.weight.zero_()
        clone.hf_model.transformer.h[0].attn.c_proj.bias.zero_()
    seen = []
    for name in ("blocks.0.hook_attn_out", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z"):
        clone.add_hook(name, lambda t, hook: seen.append(("clone", hook.name, float(t.abs().sum()))))
        gpt2.add_hook(name, lambda t, hook: seen.append(("original", hook.name, float(t.abs().sum()))))
    clone(TOKENS)
    assert [who for who, _, _ in seen] == ["clone"] * 3
    gpt2(TOKENS)
    assert [who for who, _, _ in seen] == ["clone"] * 3 + ["original"] * 3
    assert seen[2][2] == 0 and seen[5][2] > 0  # the clone's attn_out is zero, the original's is not
    clone.detach()
    gpt2(TOKENS)  # the original still works
    with pytest.raises(BridgeError, match="deepcopy"):
        copy.copy(gpt2)


# ---------------------------------------------------------------------------------------- pickling


def test_a_bridged_hf_model_saves_whole_and_by_state_dict(gpt2_dir):
    hf = _hf(gpt2_dir)
    model = bridge.wrap(hf)
    model.add_hook("blocks.0.attn.hook_pattern", lambda t, hook: None, is_permanent=True)
    model.add_hook("blocks.1.hook_resid_pre", lambda t, hook: None, is_permanent=True)
    buffer = io.BytesIO()
    torch.save(hf, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert _is_plain(loaded)
    expected = _hf(gpt2_dir)(TOKENS).logits
    torch.testing.assert_close(loaded(TOKENS).logits, expected, atol=1e-5, rtol=0)
    state = io.BytesIO()
    torch.save(hf.state_dict(), state)
    loaded = pickle.loads(pickle.dumps(hf))
    assert _is_plain(loaded)
    torch.testing.assert_close(loaded(TOKENS).logits, expected, atol=1e-5, rtol=0)


def test_pickling_a_bridge_round_trips_or_refuses_clearly(gpt2):
    gpt2.set_use_attn_result(True)
    restored = pickle.loads(pickle.dumps(gpt2))
    assert restored.hook_dict["blocks.0.attn.hook_result"].enabled
    torch.testing.assert_close(restored(TOKENS), gpt2(TOKENS), atol=0, rtol=0)
    gpt2.add_hook("hook_embed", lambda t, hook: None)
    with pytest.raises(BridgeError, match="hooks"):
        pickle.dumps(gpt2)


# ------------------------------------------------------------------------------- checkpointing


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_with_hooks_gives_the_hf_gradients(gpt2_dir):
    def halve(t, hook):
        return t * 0.5

    no_dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    reference = _hf(gpt2_dir, **no_dropout).train()
    reference.transformer.h[0].attn.register_forward_hook(lambda m, a, out: (out[0] * 0.5, *out[1:]))
    reference(TOKENS, labels=TOKENS).loss.backward()

    hf = _hf(gpt2_dir, **no_dropout).train()
    hf.gradient_checkpointing_enable()
    model = bridge.wrap(hf)
    patterns = []
    loss = model.run_with_hooks(
        TOKENS,
        return_type="loss",
        fwd_hooks=[
            ("blocks.0.hook_attn_out", halve),
            ("blocks.1.attn.hook_pattern", lambda t, hook: patterns.append(t.shape)),
        ],
    )
    loss.backward()
    expected, got = _grads(reference), _grads(hf)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)
    assert hf.is_gradient_checkpointing  # given back as it was


# -------------------------------------------------------------------------------------- threads


def test_a_second_thread_cannot_use_a_bridge_while_a_forward_runs(gpt2):
    started, release, errors = threading.Event(), threading.Event(), []

    def slow(t, hook):
        started.set()
        release.wait(10)

    def in_thread():
        gpt2.run_with_hooks(TOKENS, fwd_hooks=[("hook_embed", slow)])

    worker = threading.Thread(target=in_thread)
    worker.start()
    started.wait(10)
    for call in (lambda: gpt2(TOKENS), lambda: gpt2.add_hook("hook_embed", lambda t, hook: None)):
        try:
            call()
        except BridgeError as exc:
            errors.append(str(exc))
    release.set()
    worker.join()
    assert len(errors) == 2 and all("thread" in e for e in errors)
    gpt2(TOKENS)  # fine again once the other thread is done


# --------------------------------------------------------------------------- torch hooks on HookPoint


def test_torch_module_hooks_on_a_hook_point_fire(gpt2):
    point = gpt2.hook_dict["blocks.0.hook_resid_mid"]
    seen = []
    handle = point.register_forward_hook(lambda module, args, out: seen.append(module) or out * 0)
    pre = point.register_forward_pre_hook(lambda module, args: seen.append("pre"))
    _, cache = gpt2.run_with_cache(TOKENS, names_filter="blocks.0.hook_resid_post")
    assert seen == ["pre", point]
    handle.remove()
    pre.remove()
    assert not point.active
    block = gpt2.hf_model.transformer.h[0]
    zeros = torch.zeros(1, TOKENS.shape[1], gpt2.cfg.d_model)
    torch.testing.assert_close(cache["resid_post", 0], block.mlp(block.ln_2(zeros)), atol=1e-6, rtol=0)
    with pytest.raises(BridgeError, match="add_hook"):
        point.register_full_backward_hook(lambda *a: None)


# -------------------------------------------------------------------------------- token types


def test_hook_embed_fires_once_with_token_type_ids(gpt2_dir):
    model = bridge.wrap(_hf(gpt2_dir))
    token_types = torch.tensor([[1, 1, 2, 2, 3, 3]])
    calls = []
    _, cache = model.run_with_cache(TOKENS, token_type_ids=token_types, names_filter="hook_embed")
    model.add_hook("hook_embed", lambda t, hook: calls.append(t))
    model(TOKENS, token_type_ids=token_types)
    assert len(calls) == 1
    reference = _hf(gpt2_dir)
    torch.testing.assert_close(cache["embed"], reference.transformer.wte(TOKENS), atol=0, rtol=0)
    patched = model.run_with_hooks(
        TOKENS, token_type_ids=token_types, fwd_hooks=[("hook_embed", lambda t, hook: t * 0)]
    )
    reference.transformer.wte.register_forward_hook(
        lambda m, args, out: out * 0 if args[0].data_ptr() == TOKENS.data_ptr() else None
    )
    expected = reference(TOKENS, token_type_ids=token_types).logits
    torch.testing.assert_close(patched, expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------- bf16 norms


def test_hooked_norms_keep_hf_bf16_numerics(gpt2_dir):
    model = bridge.load(gpt2_dir, dtype=torch.bfloat16)
    reference = _hf(gpt2_dir, dtype=torch.bfloat16)
    tokens = torch.randint(1, 128, (4, 24), generator=torch.Generator().manual_seed(0))
    expected = reference(tokens).logits
    hooked = model.run_with_hooks(tokens, fwd_hooks=[(lambda n: n.endswith("hook_scale"), lambda t, hook: None)])
    torch.testing.assert_close(hooked, expected, atol=0, rtol=0)


# ------------------------------------------------------------------- found by the state machine


def test_a_hook_removing_an_earlier_hook_on_its_point_does_not_skip_the_next(gpt2):
    calls = []
    (victim,) = gpt2.add_hook("blocks.0.attn.hook_attn_scores", lambda t, hook: calls.append("victim"))
    gpt2.add_hook("blocks.0.attn.hook_attn_scores", lambda t, hook: calls.append("meddle") or victim.remove())
    gpt2.add_hook("blocks.0.attn.hook_attn_scores", lambda t, hook: calls.append("tail"))
    gpt2(TOKENS)
    assert calls == ["victim", "meddle", "tail"]
