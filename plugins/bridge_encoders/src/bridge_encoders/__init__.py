"""bridge-encoders: encoders and encoder-decoders for bridge (BERT, RoBERTa, XLM-R, DistilBERT, ModernBERT, T5, mT5,
T5Gemma, BART, HuBERT, Wav2Vec2, Whisper)."""

from bridge_encoders.adapters import ADAPTERS
from bridge_encoders.bart import BartAdapter
from bridge_encoders.blocks import (
    BartBlock,
    BartDecoderBlock,
    BertBlock,
    T5Block,
    T5DecoderBlock,
    T5GemmaBlock,
    T5GemmaDecoderBlock,
    WhisperBlock,
    WhisperDecoderBlock,
)
from bridge_encoders.components import BatchedPositions, MLMHead, ModuleInput, ModuleOutput
from bridge_encoders.encoders import BertAdapter, DistilBertAdapter, EncoderAdapter, RobertaAdapter, XLMRobertaAdapter
from bridge_encoders.modernbert import ModernBertAdapter
from bridge_encoders.speech import HubertAdapter, SpeechEncoderAdapter, Wav2Vec2Adapter
from bridge_encoders.t5 import T5Adapter, T5Attention
from bridge_encoders.t5gemma import T5GemmaAdapter
from bridge_encoders.whisper import EncoderPositions, WhisperAdapter

__all__ = [
    "ADAPTERS",
    "BartAdapter",
    "BartBlock",
    "BartDecoderBlock",
    "BatchedPositions",
    "BertAdapter",
    "BertBlock",
    "DistilBertAdapter",
    "EncoderAdapter",
    "EncoderPositions",
    "HubertAdapter",
    "MLMHead",
    "ModernBertAdapter",
    "ModuleInput",
    "ModuleOutput",
    "RobertaAdapter",
    "SpeechEncoderAdapter",
    "T5Adapter",
    "T5Attention",
    "T5Block",
    "T5DecoderBlock",
    "T5GemmaAdapter",
    "T5GemmaBlock",
    "T5GemmaDecoderBlock",
    "Wav2Vec2Adapter",
    "WhisperAdapter",
    "WhisperBlock",
    "WhisperDecoderBlock",
    "XLMRobertaAdapter",
]
