"""Rules over every installed first-party family: the known-architectures table names each of their architectures,
and a bridge's parameters are its HF model's own."""

import pytest

from bridge.kernel import known
from bridge.kernel.plugins import canonical, get_registry
from bridge.testing import make_pair


def _installed_first_party() -> list:
    return [info for info in get_registry().plugins if canonical(info.distribution) in known.FIRST_PARTY]


def test_known_table_lists_every_installed_first_party_architecture():
    plugins = _installed_first_party()
    assert plugins, "no first-party plugin is installed"
    for info in plugins:
        for adapter in info.adapters:
            for name in adapter.architectures:
                assert known.ARCHITECTURE_PLUGINS.get(name) == canonical(info.distribution), (adapter, name)
            for name in adapter.model_types:
                assert known.MODEL_TYPE_PLUGINS.get(name) == canonical(info.distribution), (adapter, name)


@pytest.mark.parametrize(
    "adapter",
    [a for info in _installed_first_party() for a in info.adapters if "vision" not in info.distribution],
    ids=lambda a: a.__name__,
)
def test_bridge_parameters_are_the_hf_models_own(adapter, tmp_path):
    """No HF module is registered as a child of a component: ``bridge.named_parameters()`` lists each HF
    parameter once, under ``hf_model.``, exactly as the HF model lists it."""
    model = make_pair(adapter, directory=tmp_path).bridge
    names = [name for name, _ in model.named_parameters(remove_duplicate=False)]
    hf_names = [f"hf_model.{name}" for name, _ in model.hf_model.named_parameters(remove_duplicate=False)]
    assert names == hf_names
