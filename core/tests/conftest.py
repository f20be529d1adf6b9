import pytest

import bridge
from bridge.testing import examples_of, save_tiny_model
from bridge_gpt2 import GPT2Adapter


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    return save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path_factory.mktemp("gpt2"))


@pytest.fixture
def gpt2(gpt2_dir):
    return bridge.load(gpt2_dir)


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry rebuilt for the test and discarded after it."""
    yield lambda: bridge.reload_plugins()
    monkeypatch.undo()
    bridge.reload_plugins()
