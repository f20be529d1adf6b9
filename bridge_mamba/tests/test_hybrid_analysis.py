"""Cache analysis and weight processing on hybrids: the residual stream decomposes into each layer's writes
(``hook_attn_out`` or ``hook_mixer_out``, ``hook_mlp_out``), heads are stacked for the attention layers only, a
gated attention's heads come from ``hook_result``, and folding the norms keeps HF's logits."""

import einops
import pytest
import torch

from bridge import BridgeError
from bridge_mamba import HYBRID_ADAPTERS, FalconH1Adapter, JambaAdapter, NemotronHAdapter, Qwen3NextAdapter

ARCHS = [(adapter, adapter.architectures[0]) for adapter in HYBRID_ADAPTERS]


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@pytest.mark.parametrize(("adapter", "arch"), ARCHS, ids=[a for _, a in ARCHS])
def test_stream_decomposes_into_each_layers_writes(pair_for, adapter, arch):
    pair = pair_for(adapter, arch)
    model, tokens = pair.bridge, pair.tokens(2, 6)
    _, cache = model.run_with_cache(tokens)
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels[0] == "embed"
    for layer, kind in enumerate(model.cfg.layer_types):
        written = [label for label in labels if label.startswith(f"{layer}_")]
        if kind == "attention" and adapter is not NemotronHAdapter:
            assert written == [f"{layer}_attn_out", f"{layer}_mlp_out"]
        elif kind in ("mamba", "mamba2", "gated_deltanet"):
            assert written[0] == f"{layer}_mixer_out"
    close(stack.sum(0), cache["resid_post", -1], atol=1e-4)


@pytest.mark.parametrize("adapter", [JambaAdapter, NemotronHAdapter], ids=lambda a: a.__name__)
def test_heads_are_stacked_for_the_attention_layers_only(pair_for, adapter):
    """Labels name the attention layers' heads; with the remainder they sum to the stream, and each head's result
    is its slice of ``hook_z`` through its rows of the HF output projection."""
    pair = pair_for(adapter)
    model, tokens = pair.bridge, pair.tokens(2, 6)
    _, cache = model.run_with_cache(tokens)
    attention = [i for i, kind in enumerate(model.cfg.layer_types) if kind == "attention"]
    stack, labels = cache.stack_head_results(return_labels=True, incl_remainder=True)
    assert labels[:-1] == [f"L{layer}H{h}" for layer in attention for h in range(model.cfg.n_heads)]
    close(stack.sum(0), cache["resid_post", -1], atol=1e-4)
    layer = attention[0]
    o_proj = model.blocks[layer].attn.out_proj.weight  # [d_model, n_heads · d_head]
    d = model.cfg.d_head
    expected = cache[f"blocks.{layer}.attn.hook_z"][:, :, 1] @ o_proj[:, d : 2 * d].T
    close(stack[1], expected)


def test_gated_attention_heads_come_from_hook_result(pair_for):
    """Qwen3-Next multiplies z by its output gate before ``o_proj``: ``z @ W_O`` is refused, the cached per-head
    ``hook_result`` is used, and it sums to ``hook_attn_out``."""
    pair = pair_for(Qwen3NextAdapter)
    model, tokens = pair.bridge, pair.tokens(2, 6)
    _, cache = model.run_with_cache(tokens)
    with pytest.raises(BridgeError, match=r"output gate.*hook_result"):
        cache.stack_head_results()
    model.set_use_attn_result(True)
    _, cache = model.run_with_cache(tokens)
    stack, labels = cache.stack_head_results(return_labels=True, incl_remainder=True)
    layer = model.cfg.layer_types.index("attention")  # the example's (only) gated attention layer
    assert labels[:-1] == [f"L{layer}H{h}" for h in range(model.cfg.n_heads)]
    close(stack.sum(0), cache["resid_post", -1], atol=1e-4)
    close(cache[f"blocks.{layer}.attn.hook_result"].sum(2), cache[f"blocks.{layer}.hook_attn_out"])


def test_gated_attention_gradient_at_hook_z_is_autograd_through_the_gate(pair_for):
    """The backward hook on ``attn.hook_z`` receives dL/dz: HF's gradient at ``o_proj``'s input times the
    gate's sigmoid (both read from the HF reference's own modules)."""
    pair = pair_for(Qwen3NextAdapter)
    model, tokens = pair.bridge, pair.tokens(1, 6)
    grads = {}
    layer = model.cfg.layer_types.index("attention")
    hook_z = f"blocks.{layer}.attn.hook_z"
    keep = lambda g, hook: grads.__setitem__("z", g)  # noqa: E731
    loss = model.run_with_hooks(tokens, return_type="loss", bwd_hooks=[(hook_z, keep)])
    loss.backward()
    attn = pair.reference.model.layers[layer].self_attn
    seen = {}

    def leaf(_module, args):
        seen["u"] = args[0].detach().requires_grad_(True)
        return (seen["u"],)

    def gate(_module, _args, out):
        seen["gate"] = out.detach().view(*out.shape[:-1], -1, 2 * attn.head_dim)[..., attn.head_dim :]

    handles = [attn.o_proj.register_forward_pre_hook(leaf), attn.q_proj.register_forward_hook(gate)]
    try:
        ref_loss = pair.reference(tokens, labels=tokens).loss
    finally:
        for handle in handles:
            handle.remove()
    (du,) = torch.autograd.grad(ref_loss, seen["u"])
    expected = du.view_as(seen["gate"]) * torch.sigmoid(seen["gate"])
    close(grads["z"], expected)
    assert expected.abs().max() > 1e-4


def test_falcon_h1_scaled_writes_are_not_split(pair_for):
    """Falcon-H1 multiplies its attention's output by ``attention_out_multiplier`` after ``o_proj`` and its MLP's by
    ``down_multiplier`` after ``down_proj``: heads and neurons are refused with the reason, and the refusal is
    right (the per-head results, times HF's multiplier, add up to ``hook_attn_out``; unscaled they do not)."""
    pair = pair_for(FalconH1Adapter)
    model, tokens = pair.bridge, pair.tokens(2, 6)
    _, cache = model.run_with_cache(tokens)
    with pytest.raises(BridgeError, match=r"scales its attn output by 0\.75 \(result_scales\)"):
        cache.stack_head_results()
    with pytest.raises(BridgeError, match=r"scales its mlp output by 0\.7 \(result_scales\)"):
        cache.get_neuron_results(0)
    layer = pair.reference.model.layers[0]
    o_proj = layer.self_attn.o_proj.weight  # [d_model, n_heads · d_head]
    heads = einops.einsum(
        cache["blocks.0.attn.hook_z"],
        einops.rearrange(o_proj, "m (h d) -> h d m", d=model.cfg.d_head),
        "b p h d, h d m -> b p m",
    )
    close(heads * layer.attn_out_multiplier, cache["blocks.0.hook_attn_out"])
    assert (heads - cache["blocks.0.hook_attn_out"]).abs().max() > 1e-2


@pytest.mark.parametrize(("adapter", "arch"), ARCHS, ids=[a for _, a in ARCHS])
def test_folding_the_norms_keeps_hfs_logits(pair_for, adapter, arch):
    """``fold_ln`` folds every norm's weight into what reads it (attention, Mamba and Gated DeltaNet input
    projections, routers, experts): the logits stay HF's, and each norm's weight is then one."""
    pair = pair_for(adapter, arch)
    model, tokens = pair.bridge, pair.tokens(2, 6)
    expected = pair.reference(tokens).logits
    model.process_weights(fold_ln=True, center_writing_weights=False, center_unembed=False, fold_value_biases=False)
    close(model(tokens), expected, atol=1e-4)
    for layer in range(model.cfg.n_layers):
        norm = getattr(model.blocks[layer], "ln1", None) or model.blocks[layer].ln2
        offset = 1.0 if issubclass(adapter, Qwen3NextAdapter) else 0.0  # (1 + w) norms fold to w = 0
        close(norm.hf.weight + offset, torch.ones_like(norm.hf.weight))
