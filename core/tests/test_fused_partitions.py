"""The ``"partitioned"`` fused q/k/v layout (equal parts, each with its share of every kind's heads, kinds in a
given order: CodeGen's ``qkv_proj``) against columns concatenated by hand, and ``attend_with_hooks(core=...)``:
an inline attention module's own arithmetic with the internal hooks fired around it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from bridge.kernel.components import FusedQKV
from bridge.kernel.components.weight_views import (
    merge_partitioned,
    partition_slice,
    split_fused,
    split_partitioned,
)
from bridge.kernel.errors import BridgeError
from bridge.testing import make_pair

sys.path.insert(0, str(Path(__file__).parent))
from public_api_adapters import GPTJExamples


def by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, parts: int, order: str) -> torch.Tensor:
    """``[..., parts · (kinds in order, each its heads of this part, flattened)]``, concatenated piece by piece."""
    heads = {"q": q, "k": k, "v": v}
    pieces = []
    for part in range(parts):
        for kind in order:
            per_part = heads[kind].shape[-2] // parts
            pieces.append(heads[kind][..., part * per_part : (part + 1) * per_part, :].flatten(-2))
    return torch.cat(pieces, dim=-1)


@pytest.mark.parametrize(
    ("h", "kv", "parts", "order"),
    [(8, 8, 4, "qvk"), (12, 12, 4, "qvk"), (4, 2, 2, "kqv"), (6, 6, 1, "qkv"), (4, 4, 4, "qkv")],
)
def test_split_is_the_inverse_of_concatenation(h, kv, parts, order):
    d = 3
    q, k, v = torch.randn(5, h, d), torch.randn(5, kv, d), torch.randn(5, kv, d)
    columns = by_hand(q, k, v, parts, order)  # [5, (h + 2·kv)·d]
    for got, want in zip(split_partitioned(columns, h, kv, d, parts, order), (q, k, v), strict=True):
        assert torch.equal(got, want)
    for got, want in zip(split_fused(columns, "partitioned", h, kv, d, parts, order), (q, k, v), strict=True):
        assert torch.equal(got, want)
    assert torch.equal(merge_partitioned(q, k, v, parts, order), columns)
    for kind, heads in (("q", q), ("k", k), ("v", v)):
        for head in range(heads.shape[1]):
            assert torch.equal(columns[:, partition_slice(kind, head, h, kv, d, parts, order)], heads[:, head])


def test_one_part_in_qkv_order_is_grouped_and_one_part_per_head_is_per_head():
    h, d = 4, 2
    columns = torch.randn(3, 3 * h * d)
    for one, other in zip(
        split_partitioned(columns, h, h, d, 1, "qkv"), split_fused(columns, "grouped", h, h, d), strict=True
    ):
        assert torch.equal(one, other)
    for one, other in zip(
        split_partitioned(columns, h, h, d, h, "qkv"), split_fused(columns, "per_head", h, h, d), strict=True
    ):
        assert torch.equal(one, other)


def test_projection_layout_lists_every_column_once_in_order():
    class Attn:
        n_heads, n_kv_heads, d_head = 8, 8, 2

    layout = FusedQKV("qkv_proj", layout="partitioned", partitions=4, order="qvk").projection_layout(Attn())
    blocks = layout["qkv_proj"]
    assert [b[2].start for b in blocks] == list(range(0, 3 * 8 * 2, 2))
    assert blocks[:4] == [("q", 0, slice(0, 2)), ("q", 1, slice(2, 4)), ("v", 0, slice(4, 6)), ("v", 1, slice(6, 8))]
    assert blocks[6] == ("q", 2, slice(12, 14))


def test_bad_partitions_are_refused():
    with pytest.raises(BridgeError, match="ordering of 'qkv'"):
        split_partitioned(torch.randn(2, 24), 4, 4, 2, 2, "qqv")
    with pytest.raises(BridgeError, match=r"3 parts needs n_heads \(4\)"):
        split_partitioned(torch.randn(2, 24), 4, 4, 2, 3, "qkv")


def test_attend_with_hooks_runs_a_modules_own_core(tmp_path):
    """``core`` replaces ``eager_attention`` on both branches: given ``on_scores``/``on_pattern`` only while those
    hooks are in use; its output is what ``hook_z`` sees and what the layer returns."""
    pair = make_pair(GPTJExamples, directory=tmp_path)
    attn = pair.bridge.blocks[0].attn
    module = attn.hf_module
    query, key, value = torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8)
    calls: list[tuple[bool, bool]] = []

    def core(module, query, key, value, attention_mask, on_scores=None, on_pattern=None, **kwargs):
        calls.append((on_scores is not None, on_pattern is not None))
        scores = torch.zeros(1, 4, 3, 3) + kwargs["offset"]
        if on_scores is not None:
            scores = on_scores(scores)
        pattern = scores.softmax(-1)
        if on_pattern is not None:
            pattern = on_pattern(pattern)
        return (pattern @ value).transpose(1, 2), pattern

    seen: dict[str, torch.Tensor] = {}
    with pair.bridge.hooks(fwd_hooks=[("blocks.0.attn.hook_z", lambda t, hook: seen.setdefault("z", t) * 2)]):
        z, _ = attn.attend_with_hooks(module, query, key, value, None, core=core, offset=1.0)
    assert calls == [(False, False)]
    torch.testing.assert_close(z, 2 * value.mean(2, keepdim=True).expand(1, 4, 3, 8).transpose(1, 2))
    assert torch.equal(seen["z"] * 2, z)
    hooks = [("blocks.0.attn.hook_attn_scores", lambda t, hook: seen.setdefault("scores", t))]
    with pair.bridge.hooks(fwd_hooks=hooks):
        attn.attend_with_hooks(module, query, key, value, None, core=core, offset=1.0)
    assert calls[-1] == (True, True)
    assert torch.equal(seen["scores"], torch.ones(1, 4, 3, 3))
