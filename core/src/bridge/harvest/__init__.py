"""Harvesting: activations of a model over a corpus, written to safetensors shards and read back.

``bridge.harvest(model, data=..., hooks=..., out=...)`` writes a harvest (this package is callable: it runs
``bridge.harvest.writer.harvest``); ``bridge.harvest.open(dir)`` reads one back (``HarvestedActivations``).
Modules: ``corpus`` (texts and tokens into rows), ``writer`` (the resumable harvest), ``reader``
(memory-mapped rows), ``layout`` (the directory's files), ``distributed`` (ranks under ``torchrun``).
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

from bridge.harvest.layout import HarvestError
from bridge.harvest.reader import HarvestedActivations, open_harvest
from bridge.harvest.writer import harvest


def open(directory: str | os.PathLike, verify: bool = True) -> HarvestedActivations:
    """Read the harvest in ``directory`` (the rows of its completed shards). Each shard's header is checked now
    and its checksum the first time it is read (``verify=False``: not)."""
    return open_harvest(directory, verify)


class _CallableHarvest(types.ModuleType):
    """``bridge.harvest`` is this package and, called, the harvest itself: ``bridge.harvest(model, ...)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> HarvestedActivations:
        return harvest(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableHarvest

__all__ = ["HarvestError", "HarvestedActivations", "harvest", "open", "open_harvest"]
