"""Zamba2's shared transformer block, hooked at each depth where it runs: against HF's own modules at that depth
(its q/k/v projections plus that depth's adapters, its MLP adapter), with patches at one depth reaching that depth
only although the weights are shared, and the cache analysis refusing to split what does not write to the stream.
"""

import einops
import pytest
import torch

from bridge import BridgeError
from bridge_mamba import Zamba2Adapter

ARCH = "Zamba2ForCausalLM"


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@pytest.fixture
def pair(pair_for):
    return pair_for(Zamba2Adapter, ARCH)


def shared_inputs(reference, tokens):
    """Each hybrid depth's attention input and MLP input, ``{layer: (attn_in, mlp_in)}``, from HF's own run."""
    seen, handles = {}, []
    for i in reference.config.hybrid_layer_ids:
        block = reference.model.layers[i].shared_transformer

        def attn_in(_m, args, kwargs, i=i):
            seen[(i, "attn")] = (args[0] if args else kwargs["hidden_states"]).detach()

        def mlp_in(_m, args, i=i):
            seen[(i, "mlp")] = args[0].detach()

        handles.append(block.self_attn.register_forward_pre_hook(attn_in, with_kwargs=True))
        handles.append(block.feed_forward.register_forward_pre_hook(mlp_in))
    try:
        with torch.no_grad():
            reference(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_shared_weights_are_hooked_per_depth_with_that_depths_adapters(pair):
    """Depths 1 and 4 run the same weights (HF ties them) with their own adapters: each depth's ``hook_q/k/v`` is
    HF's ``{q,k,v}_proj(x) + adapter(x)`` on that depth's input, ``hook_*_adapter`` the adapter's part, and the MLP's
    ``hook_adapter``/``hook_pre`` likewise; the two depths' adapters differ."""
    model, tokens = pair.bridge, pair.tokens(2, 6)
    layers = pair.reference.model.layers
    assert layers[1].shared_transformer.self_attn.q_proj.weight is layers[4].shared_transformer.self_attn.q_proj.weight
    _, cache = model.run_with_cache(tokens)
    seen = shared_inputs(pair.reference, tokens)
    d = model.cfg.d_head
    for i in (1, 3, 4):
        attn = layers[i].shared_transformer.self_attn
        slot = attn.layer_dic[i]
        x = seen[(i, "attn")]
        with torch.no_grad():
            for w in "qkv":
                adapter = getattr(attn, f"linear_{w}_adapter_list")[slot](x)
                full = getattr(attn, f"{w}_proj")(x) + adapter
                close(
                    cache[f"blocks.{i}.attn.hook_{w}_adapter"], einops.rearrange(adapter, "b p (n d) -> b p n d", d=d)
                )
                close(cache[f"blocks.{i}.attn.hook_{w}"], einops.rearrange(full, "b p (n d) -> b p n d", d=d))
            mlp = layers[i].shared_transformer.feed_forward
            y = seen[(i, "mlp")]
            adapter = mlp.gate_up_proj_adapter_list[slot](y)
            close(cache[f"blocks.{i}.mlp.hook_adapter"], adapter)
            close(cache[f"blocks.{i}.mlp.hook_pre"], (mlp.gate_up_proj(y) + adapter).chunk(2, dim=-1)[0])
    assert (cache["blocks.1.attn.hook_q_adapter"] - cache["blocks.4.attn.hook_q_adapter"]).abs().max() > 1e-3


def test_a_patch_at_one_depth_reaches_that_depth_only(pair):
    """Zeroing head 1 of ``blocks.1.attn.hook_z`` equals zeroing it in HF at depth 1's module only (depth 4 runs
    the same weights and is left alone), and differs from zeroing it at both depths."""
    model, tokens = pair.bridge, pair.tokens(2, 6)
    d = model.cfg.d_head

    def zero_head(z, hook):
        z = z.clone()
        z[:, :, 1] = 0.0
        return z

    got = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", zero_head)])

    def run_reference(depths):
        def zero_rows(_m, args):
            z = args[0].clone()
            z[..., d : 2 * d] = 0.0
            return (z,)

        layers = pair.reference.model.layers
        handles = [layers[i].shared_transformer.self_attn.o_proj.register_forward_pre_hook(zero_rows) for i in depths]
        try:
            with torch.no_grad():
                return pair.reference(tokens).logits
        finally:
            for handle in handles:
                handle.remove()

    close(got, run_reference([1]))
    assert (got - run_reference([1, 4])).abs().max() > 1e-4


def test_patching_an_adapter_output_at_one_depth(pair):
    """Zeroing ``blocks.4.attn.hook_k_adapter`` equals HF with depth 4's k adapter returning zeros."""
    model, tokens = pair.bridge, pair.tokens(2, 6)
    got = model.run_with_hooks(
        tokens, fwd_hooks=[("blocks.4.attn.hook_k_adapter", lambda x, hook: torch.zeros_like(x))]
    )
    attn = pair.reference.model.layers[4].shared_transformer.self_attn
    handle = attn.linear_k_adapter_list[attn.layer_dic[4]].register_forward_hook(
        lambda m, a, out: torch.zeros_like(out)
    )
    try:
        with torch.no_grad():
            expected = pair.reference(tokens).logits
    finally:
        handle.remove()
    close(got, expected)
    assert (got - pair.reference(tokens).logits).abs().max() > 1e-4


def test_the_shared_block_reaches_the_stream_through_the_mixer(pair):
    """``hook_mixer_in = hook_resid_pre + hook_shared_out``; the stream is ``resid_pre + mixer_out`` only, so
    ``decompose_resid`` gives ``mixer_out`` per layer and heads and neurons of the shared block are refused."""
    model, tokens = pair.bridge, pair.tokens(2, 6)
    _, cache = model.run_with_cache(tokens)
    close(cache["blocks.1.hook_mixer_in"], cache["blocks.1.hook_resid_pre"] + cache["blocks.1.hook_shared_out"])
    close(cache["blocks.1.hook_shared_in"][..., : model.cfg.d_model], cache["blocks.1.hook_resid_pre"], atol=0)
    close(cache["blocks.1.hook_shared_in"][..., model.cfg.d_model :], cache["hook_embed"], atol=0)
    _, labels = cache.decompose_resid(return_labels=True)
    assert labels == ["embed", *(f"{layer}_mixer_out" for layer in range(model.cfg.n_layers))]
    with pytest.raises(BridgeError, match=r"block 1's attention does not write to the residual stream"):
        cache.stack_head_results()
    with pytest.raises(BridgeError, match=r"block 1's MLP does not write to the residual stream"):
        cache.get_neuron_results(1)
