"""bridge-encoders: encoders and encoder-decoders (BERT, RoBERTa, XLM-R, DistilBERT) for bridge."""

from bridge_encoders.adapters import ADAPTERS
from bridge_encoders.blocks import BertBlock
from bridge_encoders.components import MLMHead, ModuleInput, ModuleOutput
from bridge_encoders.encoders import BertAdapter, DistilBertAdapter, EncoderAdapter, RobertaAdapter, XLMRobertaAdapter

__all__ = [
    "ADAPTERS",
    "BertAdapter",
    "BertBlock",
    "DistilBertAdapter",
    "EncoderAdapter",
    "MLMHead",
    "ModuleInput",
    "ModuleOutput",
    "RobertaAdapter",
    "XLMRobertaAdapter",
]
