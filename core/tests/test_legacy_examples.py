"""An adapter written before ``Examples`` existed (``example_config`` on the adapter class) still runs through the
kit, with a DeprecationWarning saying where its test-only members belong now."""

from __future__ import annotations

import pytest
from public_api_adapters import PhiAdapter, PhiExamples

from bridge.testing import check_logits_match, examples_of, make_pair


class LegacyPhi(PhiAdapter):
    unread_hooks = ("nothing.hook_unread",)

    @classmethod
    def example_config(cls, architecture=None):
        config = PhiExamples.example_config(architecture)
        config.num_hidden_layers = 1
        return config


def test_a_legacy_adapter_gets_examples_from_its_own_class_methods(tmp_path):
    with pytest.warns(DeprecationWarning, match=r"LegacyPhi defines example_config\(\) itself.*register_examples"):
        examples = examples_of(LegacyPhi)
    assert examples.adapter is LegacyPhi and examples.unread_hooks == ("nothing.hook_unread",)
    assert examples.example_config().num_hidden_layers == 1
    with pytest.warns(DeprecationWarning):
        pair = make_pair(LegacyPhi, directory=tmp_path)
    assert type(pair.bridge.adapter) is LegacyPhi and len(pair.bridge.blocks) == 1
    check_logits_match(pair)
