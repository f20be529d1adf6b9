import pytest
import torch

from bridge.testing import examples_of, save_tiny_model
from bridge_encoders import ADAPTERS

# Tiny models gain nothing from intra-op threads; on a shared 2-core machine they only slow backward passes.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """One saved tiny model per architecture, shared by the session (saved on first use)."""
    saved = {}

    def directory(architecture, **overrides):
        key = (architecture, tuple(sorted(overrides.items())))
        if key not in saved:
            adapter = next(a for a in ADAPTERS if architecture in a.architectures)
            config = examples_of(adapter).example_config(architecture, **overrides)
            saved[key] = save_tiny_model(config, tmp_path_factory.mktemp(architecture))
        return saved[key]

    return directory
