"""Harvesting an SSM: residual stream and mixer hooks, against HF hidden states and run_with_cache."""

import torch

import bridge
from bridge.testing import make_pair
from bridge_mamba import MambaAdapter


def test_harvest_mixer_and_residual_hooks(tmp_path):
    pair = make_pair(MambaAdapter, directory=tmp_path / "model")
    model = pair.bridge
    generator = torch.Generator().manual_seed(0)
    docs = [torch.randint(1, model.cfg.d_vocab, (int(n),), generator=generator).tolist() for n in range(3, 40, 4)]
    hooks = ["blocks.0.hook_resid_post", "blocks.0.mixer.hook_in_proj"]
    acts = bridge.harvest(
        model, data=docs, hooks=hooks, out=tmp_path / "acts", batch_size=2, context_length=10, progress=False
    )
    everything = acts.to_torch()
    with torch.no_grad():
        hidden = pair.reference(everything["tokens"], output_hidden_states=True).hidden_states
        _, cache = model.run_with_cache(everything["tokens"], names_filter=hooks)
    # HF Mamba's hidden_states are each layer's output (no embedding entry): [0] is block 0's
    torch.testing.assert_close(everything["blocks.0.hook_resid_post"], hidden[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(everything["blocks.0.mixer.hook_in_proj"], cache["blocks.0.mixer.hook_in_proj"])
    assert len(acts) == len(everything["tokens"]) > 10
