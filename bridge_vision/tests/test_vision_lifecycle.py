"""Core's lifecycle checks on the vision family: one bridge per model, copies and pickles are plain HF models,
and the hook-lifecycle state machine (hypothesis) on an image tower and a two-tower model."""

import pytest

from bridge.testing import check_lifecycle
from bridge_vision import CLIPAdapter, Siglip2VisionAdapter, SiglipVisionAdapter


@pytest.mark.parametrize("adapter", [SiglipVisionAdapter, Siglip2VisionAdapter, CLIPAdapter], ids=lambda a: a.__name__)
def test_lifecycle(adapter):
    check_lifecycle(adapter, max_examples=15)
