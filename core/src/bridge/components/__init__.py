"""Generic components; families add only what is special to them."""

from bridge.components.attention import Attention, FusedQKV, QKVSource, SplitQKV, weight_in_out
from bridge.components.base import Attachment, Component, FlatPositions, ForwardOverride, InputTap, OutputTap
from bridge.components.blocks import (
    Block,
    ParallelBlock,
    PostNormBlock,
    SequentialBlock,
    SharedNormParallelBlock,
    first_output,
)
from bridge.components.embedding import Embedding
from bridge.components.mlp import MLP
from bridge.components.moe import MoE, Routing, sigmoid_group_topk, softmax_topk
from bridge.components.norm import Norm
from bridge.seam import additive_mask, eager_attention

__all__ = [
    "MLP",
    "Attachment",
    "Attention",
    "Block",
    "Component",
    "Embedding",
    "FlatPositions",
    "ForwardOverride",
    "FusedQKV",
    "InputTap",
    "MoE",
    "Norm",
    "OutputTap",
    "ParallelBlock",
    "PostNormBlock",
    "QKVSource",
    "Routing",
    "SequentialBlock",
    "SharedNormParallelBlock",
    "SplitQKV",
    "additive_mask",
    "eager_attention",
    "first_output",
    "sigmoid_group_topk",
    "softmax_topk",
    "weight_in_out",
]
