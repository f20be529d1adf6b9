"""Generic components; families add only what is special to them."""

from bridge.kernel.components.attention import (
    Attention,
    CrossAttention,
    FusedQKV,
    QKVSource,
    SplitQKV,
    heads,
    weight_in_out,
)
from bridge.kernel.components.base import (
    Attachment,
    Component,
    FlatPositions,
    ForwardOverride,
    InputTap,
    ModuleHook,
    OutputTap,
)
from bridge.kernel.components.blocks import (
    Block,
    ParallelBlock,
    PostNormBlock,
    SequentialBlock,
    SharedNormParallelBlock,
    first_output,
)
from bridge.kernel.components.embedding import Embedding, PosEmbedding, TokenEmbedding
from bridge.kernel.components.mlp import MLP, GateUpMLP
from bridge.kernel.components.moe import (
    GATED_SHARED_EXPERT,
    MoE,
    Routing,
    group_limited_mask,
    sigmoid_group_topk,
    softmax_then_topk,
    topk_then_softmax,
)
from bridge.kernel.components.norm import Norm
from bridge.kernel.components.qk_norm import NormLayout, QKNormAttention, fire_as_bphd
from bridge.kernel.components.scaled_embedding import ScaledEmbedding
from bridge.kernel.components.unembed import Unembed
from bridge.kernel.components.weight_views import (
    AttentionWeights,
    FusedLayout,
    MLPWeights,
    QKVWeights,
    WeightViewError,
    fused_qkv,
    linear_bias,
    linear_in_out,
    separate_qkv,
    split_partitioned,
)
from bridge.kernel.seam import additive_mask, eager_attention

__all__ = [
    "GATED_SHARED_EXPERT",
    "MLP",
    "Attachment",
    "Attention",
    "AttentionWeights",
    "Block",
    "Component",
    "CrossAttention",
    "Embedding",
    "FlatPositions",
    "ForwardOverride",
    "FusedLayout",
    "FusedQKV",
    "GateUpMLP",
    "InputTap",
    "MLPWeights",
    "MoE",
    "ModuleHook",
    "Norm",
    "NormLayout",
    "OutputTap",
    "ParallelBlock",
    "PosEmbedding",
    "PostNormBlock",
    "QKNormAttention",
    "QKVSource",
    "QKVWeights",
    "Routing",
    "ScaledEmbedding",
    "SequentialBlock",
    "SharedNormParallelBlock",
    "SplitQKV",
    "TokenEmbedding",
    "Unembed",
    "WeightViewError",
    "additive_mask",
    "eager_attention",
    "fire_as_bphd",
    "first_output",
    "fused_qkv",
    "group_limited_mask",
    "heads",
    "linear_bias",
    "linear_in_out",
    "separate_qkv",
    "sigmoid_group_topk",
    "softmax_then_topk",
    "split_partitioned",
    "topk_then_softmax",
    "weight_in_out",
]
