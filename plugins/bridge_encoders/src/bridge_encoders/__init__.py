"""bridge-encoders: encoders and encoder-decoders (BERT, RoBERTa, XLM-R, DistilBERT, T5, mT5, BART) for bridge."""

from bridge_encoders.adapters import ADAPTERS
from bridge_encoders.bart import BartAdapter
from bridge_encoders.blocks import BartBlock, BartDecoderBlock, BertBlock, T5Block, T5DecoderBlock
from bridge_encoders.components import BatchedPositions, MLMHead, ModuleInput, ModuleOutput
from bridge_encoders.encoders import BertAdapter, DistilBertAdapter, EncoderAdapter, RobertaAdapter, XLMRobertaAdapter
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
    "MLMHead",
    "ModuleInput",
    "ModuleOutput",
    "RobertaAdapter",
    "T5Adapter",
    "T5Attention",
    "T5Block",
    "T5DecoderBlock",
    "XLMRobertaAdapter",
]
