"""The normalized config against the HF model: every ``cfg`` field TransformerLens code reads, checked against the
HF config, the HF modules and the hooks' own data (so a wrong ``rotary_dim`` or a plain MLP declared gated fails,
though every output still matches HF)."""

from __future__ import annotations

from typing import Any

from bridge.kernel.components.norm import Norm
from bridge.testing.algebra import rotated_features
from bridge.testing.compare import conformance_check, fail
from bridge.testing.layers import attention_of
from bridge.testing.pair import Pair


def _hf_value(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


@conformance_check(paths=("native",))
def check_config(pair: Pair) -> None:
    """``cfg`` says what the model is: ``n_layers`` (its blocks), ``d_vocab``/``d_vocab_out`` (HF's vocabulary, the
    unembedding's rows), ``n_ctx`` (HF's context), ``original_architecture`` (the HF class), ``normalization_type``,
    ``final_rms`` and ``eps`` (the norm components, which ``check_norms_match_hf`` holds to HF's), ``gated_mlp``
    (MLPs with ``hook_pre_linear``), ``attn_only``, ``parallel_attn_mlp`` (blocks without ``hook_resid_mid`` whose
    attention and MLP outputs are both added to ``hook_resid_pre``),
    ``positional_embedding_type`` (``"rotary"`` exactly where attention has ``hook_rot_q``) and ``rotary_dim``
    (the features per head that rotary moves, measured from ``hook_rot_q`` against the pre-rotary query)."""
    model, cfg = pair.bridge, pair.bridge.cfg
    problems: list[str] = []

    def expect(field: str, got: Any, wanted: Any, why: str) -> None:
        if got != wanted:
            problems.append(f"cfg.{field} is {got!r}, {why} says {wanted!r}")

    hf = model.hf_model
    expect("original_architecture", cfg.original_architecture, type(hf).__name__, "the HF model's class")
    if len(model.blocks):
        expect("n_layers", cfg.n_layers, len(model.blocks), "the number of blocks")
        if "text" in model.adapter.modalities:  # the blocks at the top read tokens: a language model's sizes
            text = getattr(hf.config, "text_config", None) or hf.config
            vocab = _hf_value(text, "vocab_size")
            if vocab is not None and cfg.d_vocab:
                expect("d_vocab", cfg.d_vocab, vocab, "the HF config's vocab_size")
            if model.unembed is not None and getattr(model.unembed, "weight", None) is not None:
                expect("d_vocab_out", cfg.d_vocab_out, model.unembed.weight.shape[0], "the unembedding's rows")
            context = _hf_value(text, "max_position_embeddings", "n_positions")
            if context is not None:
                expect("n_ctx", cfg.n_ctx, context, "the HF config's max_position_embeddings")
        _check_norm_fields(model, expect)
        _check_block_fields(model, expect)
        _check_positions(pair, expect)
    if problems:
        fail(f"{cfg.architecture}: " + "; ".join(problems))


def _check_norm_fields(model: Any, expect: Any) -> None:
    cfg = model.cfg
    final = model.ln_final
    if isinstance(final, Norm):
        expect("final_rms", cfg.final_rms, final.kind == "RMS", f"ln_final's kind ({final.kind})")
        expect("eps", cfg.eps, final.eps, "ln_final's epsilon")
    block_norms = [m for m in model.blocks[0].children() if isinstance(m, Norm)]
    if block_norms:
        kind = block_norms[0].kind
        expect("normalization_type", cfg.normalization_type, kind, "block 0's norms")


def _check_block_fields(model: Any, expect: Any) -> None:
    cfg = model.cfg
    mlps = [child for block in model.blocks for child in block.children() if hasattr(child, "hook_post")]
    if mlps:
        gated = any(hasattr(mlp, "hook_pre_linear") for mlp in mlps)
        expect("gated_mlp", cfg.gated_mlp, gated, "the MLPs' hooks (hook_pre_linear)")
    has_mlp = any("mlp" in getattr(block, "hf_modules", {}) or hasattr(block, "mlp") for block in model.blocks)
    if any(attention_of(block) is not None for block in model.blocks):
        expect("attn_only", cfg.attn_only, not has_mlp, "the blocks' children")
    hooks = set(model.hook_dict)
    attention_blocks = [i for i, block in enumerate(model.blocks) if attention_of(block) is not None and has_mlp]
    if attention_blocks:
        first = attention_blocks[0]
        parallel = f"blocks.{first}.hook_resid_mid" not in hooks and any(
            {"hook_attn_out", "hook_mlp_out"} <= set(terms) for _, terms in model.blocks[first].algebra
        )
        expect("parallel_attn_mlp", cfg.parallel_attn_mlp, parallel, f"block {first}'s hooks (no hook_resid_mid)")


def _check_positions(pair: Pair, expect: Any) -> None:
    model, cfg = pair.bridge, pair.bridge.cfg
    rotary = [i for i, block in enumerate(model.blocks) if hasattr(attention_of(block), "hook_rot_q")]
    attends = any(attention_of(block) is not None for block in model.blocks)
    if rotary:
        if cfg.positional_embedding_type != "rotary":
            expect("positional_embedding_type", cfg.positional_embedding_type, "rotary", "the attention's hook_rot_q")
        with pair.on_path():
            _, cache = model.run_with_cache(
                pair.tokens(), return_type=None, names_filter=lambda n: n.startswith(f"blocks.{rotary[0]}.")
            )
        child = next(
            n for n, m in model.blocks[rotary[0]].named_children() if m is attention_of(model.blocks[rotary[0]])
        )
        moved = rotated_features(cache, f"blocks.{rotary[0]}.{child}.", attention_of(model.blocks[rotary[0]]))
        expect("rotary_dim", cfg.rotary_dim, moved, f"the features hook_rot_q moves in block {rotary[0]}")
    elif attends and cfg.positional_embedding_type == "rotary":
        expect("positional_embedding_type", cfg.positional_embedding_type, "not rotary", "no attention has hook_rot_q")


__all__ = ["check_config"]
