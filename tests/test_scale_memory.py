"""Memory: ``run_with_cache(device=...)`` keeps only the moved copies, never the activations themselves.

On a CPU-only machine ``device="cpu"`` moves nothing; moving to ``"meta"`` is a real move (a new tensor
on another device) that allocates nothing, so it shows which tensors the cache keeps alive.
"""

import gc
import weakref

import pytest
import torch

import bridge
from bridge.testing import examples_of
from bridge.testing.fixtures import save_tiny_model
from bridge_gpt2.adapters import GPT2Adapter

TOKENS = torch.tensor([[0, 5, 17, 33, 9, 41, 2, 60]])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return bridge.load(save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path_factory.mktemp("gpt2")))


def activations_alive(model, device):
    """Weak references to the storage of every activation the hooks saw that is still alive; and the output."""
    seen: list[weakref.ref] = []

    def watch(x, hook):
        seen.append(weakref.ref(x.untyped_storage()))  # lives as long as the memory does

    with model.hooks(fwd_hooks=[(lambda name: True, watch)]), torch.no_grad():
        kept = model.run_with_cache(TOKENS, device=device)
    gc.collect()
    return [ref for ref in seen if ref() is not None], kept


def test_cache_moved_to_another_device_keeps_no_activation_alive(model):
    alive, (_, cache) = activations_alive(model, "meta")
    assert len(cache) > 10 and all(t.device.type == "meta" for t in cache.values())
    assert alive == []


def test_cache_on_the_same_device_keeps_the_activations(model):  # the check above can fail
    alive, (_, cache) = activations_alive(model, None)
    assert len(alive) >= len(cache) // 2


def test_a_patch_on_another_device_is_refused_unless_the_model_is_dispatched(model):
    with pytest.raises(bridge.kernel.errors.HookOutputError, match="returned a tensor on meta"):
        model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: x.to("meta"))])
