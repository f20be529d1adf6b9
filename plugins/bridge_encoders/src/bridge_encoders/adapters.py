"""Every adapter of bridge-encoders, in the order they are registered."""

from __future__ import annotations

from bridge_encoders.encoders import BertAdapter, DistilBertAdapter, RobertaAdapter, XLMRobertaAdapter

ADAPTERS = (BertAdapter, RobertaAdapter, XLMRobertaAdapter, DistilBertAdapter)

__all__ = ["ADAPTERS"]
