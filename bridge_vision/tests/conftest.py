import pytest
import torch

from bridge.testing import make_pair
from bridge_vision import ADAPTERS
from bridge_vision.testing import save_example_model

# Tiny models gain nothing from intra-op threads; on a shared 2-core machine they only slow backward passes.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """One saved tiny model (with its image processor) per architecture, shared by the session."""
    cases = [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures]
    return {arch: save_example_model(adapter, arch, tmp_path_factory.mktemp(arch)) for adapter, arch in cases}


@pytest.fixture
def pair_for(model_dirs):
    def build(adapter, architecture, path="native"):
        return make_pair(adapter, architecture, path, directory=model_dirs[architecture])

    return build
