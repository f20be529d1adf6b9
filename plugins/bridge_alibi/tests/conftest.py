import pytest
import torch

from bridge.testing import examples_of, make_pair, save_tiny_model
from bridge_alibi import ADAPTERS, FalconAdapter

# Tiny models gain nothing from intra-op threads; on a shared 2-core machine they only slow backward passes.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """One saved tiny model per architecture and Falcon variant, shared by the session."""
    dirs = {arch: tmp_path_factory.mktemp(arch) for adapter in ADAPTERS for arch in adapter.architectures}
    for name, config in examples_of(FalconAdapter).conformance_configs().items():  # beyond the example config
        dirs[name] = save_tiny_model(config, tmp_path_factory.mktemp(name))
    return dirs


@pytest.fixture
def pair_for(model_dirs):
    """``pair_for(adapter, name, path)``: a conformance pair whose reference is the adapter's
    ``reference_model`` where it has one (Falcon: ALiBi counted once, HF's SDPA semantics)."""

    def build(adapter, name, path="native"):
        arch = name if name in adapter.architectures else adapter.architectures[0]
        pair = make_pair(adapter, arch, path, directory=model_dirs[name])
        if hasattr(adapter, "reference_model"):
            pair.reference = examples_of(adapter).reference_model(type(pair.bridge.hf_model), model_dirs[name])
        return pair

    return build
