"""bridge-encoders: encoders and encoder-decoders for bridge (BERT, RoBERTa, XLM-R, DistilBERT, ModernBERT, T5, mT5,
BART, HuBERT, Wav2Vec2)."""

from bridge_encoders.adapters import ADAPTERS
from bridge_encoders.bart import BartAdapter
from bridge_encoders.blocks import BartBlock, BartDecoderBlock, BertBlock, T5Block, T5DecoderBlock
from bridge_encoders.components import BatchedPositions, MLMHead, ModuleInput, ModuleOutput
from bridge_encoders.encoders import BertAdapter, DistilBertAdapter, EncoderAdapter, RobertaAdapter, XLMRobertaAdapter
from bridge_encoders.modernbert import ModernBertAdapter
from bridge_encoders.speech import HubertAdapter, SpeechEncoderAdapter, Wav2Vec2Adapter
from bridge_encoders.t5 import T5Adapter, T5Attention

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
    "Wav2Vec2Adapter",
    "XLMRobertaAdapter",
]
