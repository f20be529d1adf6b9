"""Every adapter of bridge-encoders, in the order they are registered."""

from __future__ import annotations

from bridge_encoders.bart import BartAdapter
from bridge_encoders.encoders import BertAdapter, DistilBertAdapter, RobertaAdapter, XLMRobertaAdapter
from bridge_encoders.modernbert import ModernBertAdapter
from bridge_encoders.speech import HubertAdapter, Wav2Vec2Adapter
from bridge_encoders.t5 import T5Adapter
from bridge_encoders.t5gemma import T5GemmaAdapter
from bridge_encoders.whisper import WhisperAdapter

ADAPTERS = (
    BertAdapter,
    RobertaAdapter,
    XLMRobertaAdapter,
    DistilBertAdapter,
    ModernBertAdapter,
    T5Adapter,
    T5GemmaAdapter,
    BartAdapter,
    HubertAdapter,
    Wav2Vec2Adapter,
    WhisperAdapter,
)

__all__ = ["ADAPTERS"]
