"""What each block writes into the residual stream and which norms read it, read off the block wirings.

A block's ``algebra`` (``(sum, terms)`` pairs of hook names, exact under patching) says which hooks are
residual-stream *states* (``hook_resid_pre``, ``hook_resid_mid``, ``hook_resid_post``) and which are
*writes* (``hook_attn_out``, ``hook_mlp_out``, an SSM mixer's ``mixer.hook_ssm_out``…). The cache analysis
works from that, so sequential, parallel and SSM blocks (and any family wiring that declares its algebra) need
no special cases. Children named with the canonical names say the rest: ``ln1``/``ln2`` (or an SSM block's ``norm``)
are the norms that read the stream; what a block applies to a sublayer's output before it is added
(``Block.sublayer_output_modules``: Gemma's and OLMo-2's ``ln1_post``/``ln2_post``, DINOv2's layer scales) means its
per-head or per-neuron parts do not add up to the write.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bridge.kernel.components.blocks import Block
from bridge.kernel.errors import BridgeError

_STATES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")


class AnalysisError(BridgeError):
    """A cache analysis asked for something this model or this cache cannot give."""


@dataclass(frozen=True)
class BlockLayout:
    """The residual-stream view of one block.

    ``writes``: the short names of what the block adds to the stream, in order (``("attn_out", "mlp_out")``,
    ``("ssm_out",)``); ``write_hooks``: each write's hook name inside the block (``"mixer.hook_ssm_out"``);
    ``mid_writes``: those already in ``resid_mid`` (empty when the block has no
    ``resid_mid``: a parallel block's MLP reads ``resid_pre``); ``attn_norm``/``mlp_norm``: the child norms
    whose ``hook_scale`` normalizes what the attention (or mixer) and the MLP read, ``None`` if they read the
    stream unnormalized; ``heads_write``/``neurons_write``: whether ``z @ W_O`` per head (plus ``b_O``) and
    ``post @ W_out`` per neuron (plus ``b_out``) add up to ``attn_out``/``mlp_out``; ``why_not`` says why not;
    ``results_write``: whether the cached per-head ``attn.hook_result`` (the output projection split by head) adds
    up to ``attn_out`` (also where ``z @ W_O`` does not: an output gate between ``z`` and the projection).
    """

    layer: int
    writes: tuple[str, ...]
    write_hooks: dict[str, str]
    mid_writes: tuple[str, ...]
    attn_norm: str | None
    mlp_norm: str | None
    heads_write: bool
    neurons_write: bool
    why_not: dict[str, str]
    results_write: bool = False

    @property
    def has_mid(self) -> bool:
        return bool(self.mid_writes)


def block_layout(block: nn.Module, layer: int) -> BlockLayout:
    """The ``BlockLayout`` of ``block`` (the bridge's block component at index ``layer``)."""
    if not isinstance(block, Block) or not block.algebra:
        raise AnalysisError(
            f"block {layer} ({type(block).__name__}) declares no residual algebra, so the cache analysis "
            "cannot tell what it writes into the residual stream"
        )
    if block.output_hook != "hook_resid_post":
        raise AnalysisError(
            f"block {layer} ({type(block).__name__}) normalizes the residual stream itself (its output is "
            f"{block.output_hook}), so no sum of cached writes is the stream the next block reads; the cache "
            "analysis covers pre-norm blocks only"
        )
    for total, terms in block.algebra:
        if not any(term in _STATES for term in terms):
            raise AnalysisError(
                f"block {layer} ({type(block).__name__}) computes its {total} as {' + '.join(terms)}: no earlier "
                "residual state is among the terms (the block carries a transform of the stream on, e.g. a scaled "
                "norm of it), so no sum of cached writes is the stream; the cache analysis covers blocks that add "
                "their writes to the stream"
            )
    writes: list[str] = []
    mid_writes: tuple[str, ...] = ()
    for total, terms in block.algebra:
        new = [_short(t) for t in terms if t not in _STATES and _short(t) not in writes]
        writes.extend(new)
        if total == "hook_resid_mid":
            mid_writes = tuple(_short(t) for t in terms if t not in _STATES)
    children = dict(block.named_children())
    attn_norm = "ln1" if "ln1" in children else ("norm" if "norm" in children else None)
    mlp_norm = "ln2" if "ln2" in children else None
    if mlp_norm is None and not mid_writes and "mlp" in children:
        mlp_norm = attn_norm  # a parallel block with one shared norm (Falcon-7B)
    why_not: dict[str, str] = {}
    applied = {
        child: [
            n
            for n in names
            if n in children or n in block.hf_modules or isinstance(getattr(block.hf, n, None), nn.Parameter)
        ]
        for child, names in block.sublayer_output_modules.items()
    }
    heads_write = _sublayer_writes("attn", applied.get("attn", []), "attn_out", children, layer, why_not, writes)
    neurons_write = _sublayer_writes("mlp", applied.get("mlp", []), "mlp_out", children, layer, why_not, writes)
    gated = "attn" in children and not getattr(children["attn"], "z_feeds_out_proj", True)
    scales = {child: (block.residual_scale, "residual_scale") for child in ("attn", "mlp")}
    scales |= {child: (scale, "result_scales") for child, scale in block.result_scales.items()}
    for child, write in (("attn", "attn_out"), ("mlp", "mlp_out")):
        scale, field = scales[child]
        if scale == 1.0:
            continue
        why_not.setdefault(
            child,
            f"block {layer} scales its {child} output by {scale} ({field}) before adding it to the residual "
            f"stream, so its per-head or per-neuron results do not add up to hook_{write}; decompose it per "
            f"layer with decompose_resid ({write}) instead",
        )
        if child == "attn":
            heads_write = gated = False
        else:
            neurons_write = False
    if neurons_write and not hasattr(children["mlp"], "hook_post"):
        neurons_write = False
        why_not["mlp"] = (
            f"block {layer}'s MLP ({type(children['mlp']).__name__}) has no single neuron basis "
            "(a mixture of experts routes each token to a few expert MLPs); decompose it per layer with "
            "decompose_resid (mlp_out), or use its expert hooks"
        )
    return BlockLayout(
        layer=layer,
        writes=tuple(writes),
        write_hooks={_short(t): t for _, terms in block.algebra for t in terms if t not in _STATES},
        mid_writes=mid_writes,
        attn_norm=attn_norm,
        mlp_norm=mlp_norm,
        heads_write=heads_write,
        neurons_write=neurons_write,
        why_not=why_not,
        results_write=heads_write or (gated and "ln1_post" not in children),
    )


def _short(hook_name: str) -> str:
    """``hook_attn_out`` → ``attn_out``; ``mixer.hook_ssm_out`` → ``ssm_out``."""
    return hook_name.rsplit(".", 1)[-1].removeprefix("hook_")


def _sublayer_writes(
    child: str,
    applied: list[str],
    write: str,
    children: dict[str, nn.Module],
    layer: int,
    why_not: dict[str, str],
    stream_writes: list[str],
) -> bool:
    if child not in children:
        kind = "attention" if child == "attn" else "MLP"
        why_not[child] = f"block {layer} has no {kind} (it writes {_writes_hint(children)})"
        return False
    if write not in stream_writes:
        kind = "attention" if child == "attn" else "MLP"
        why_not[child] = (
            f"block {layer}'s {kind} does not write to the residual stream (its output feeds another sublayer; "
            f"the stream takes {', '.join(stream_writes)}), so its per-head or per-neuron results are not part of "
            "the stream"
        )
        return False
    if child == "attn" and not getattr(children[child], "z_feeds_out_proj", True):
        why_not[child] = (
            f"block {layer}'s attention changes z before its output projection (an output gate), so z @ W_O per "
            "head does not add up to hook_attn_out; cache attn.hook_result (set_use_attn_result(True)) for its "
            "per-head outputs, or decompose it per layer with decompose_resid (attn_out)"
        )
        return False
    if applied:
        part = "per-head results (z @ W_O)" if child == "attn" else "per-neuron results (post @ W_out)"
        why_not[child] = (
            f"block {layer} applies {', '.join(applied)} to its {child} output before adding it to the residual "
            f"stream, so its {part} do not add up to hook_{write}; decompose it per layer with "
            f"decompose_resid ({write}) instead"
        )
        return False
    return True


def _writes_hint(children: dict[str, nn.Module]) -> str:
    hooks = [name for name in children if name.startswith("hook_") and name.endswith("_out")]
    mixer = children.get("mixer")
    if mixer is not None and hasattr(mixer, "hook_ssm_out"):
        hooks.append("mixer.hook_ssm_out")
    return ", ".join(hooks) or "no sublayer outputs"
