"""The hook-name contract: which hook points a model must have, and their shapes.

``check_implied_hooks`` reads the HF model (not the adapter) for what the bridge must offer: rotary
positions imply ``attn.hook_rot_q``/``hook_rot_k``, a learned position table implies ``hook_pos_embed``,
every attention, MLP and norm component its TransformerLens hooks. ``check_shapes`` runs every hook point
of ``hook_dict`` (opt-in ones enabled) with that hook point *alone* active, so a shape that depends on
which other hooks are active (a module run on flattened positions) is caught.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from bridge.kernel.components.attention import Attention, CrossAttention
from bridge.kernel.components.blocks import Block
from bridge.kernel.components.mlp import MLP
from bridge.kernel.components.norm import Norm
from bridge.testing.compare import CheckNotRun, fail

if TYPE_CHECKING:
    from bridge.model import Bridge
    from bridge.testing.pair import Pair

#: Hooks every component of a kind must have (TransformerLens's names), relative to the component.
ATTENTION_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z")
ROTARY_HOOKS = ("hook_rot_q", "hook_rot_k")
MLP_HOOKS = ("hook_pre", "hook_post")
NORM_HOOKS = ("hook_scale", "hook_normalized")


def shape_contract(cfg: Any, b: int, p: int) -> dict[str, tuple[int, ...]]:
    """Hook-name suffix → shape (TransformerLens's, batch first) for a forward pass on ``[b, p]`` tokens."""
    return {
        "hook_resid_pre": (b, p, cfg.d_model),
        "hook_resid_mid": (b, p, cfg.d_model),
        "hook_resid_post": (b, p, cfg.d_model),
        "hook_attn_out": (b, p, cfg.d_model),
        "hook_mlp_out": (b, p, cfg.d_model),
        "hook_mlp_in": (b, p, cfg.d_model),
        "hook_attn_in": (b, p, cfg.n_heads, cfg.d_model),
        "hook_q_input": (b, p, cfg.n_heads, cfg.d_model),
        "hook_k_input": (b, p, cfg.n_key_value_heads, cfg.d_model),
        "hook_v_input": (b, p, cfg.n_key_value_heads, cfg.d_model),
        "hook_scale": (b, p, 1),
        "hook_normalized": (b, p, cfg.d_model),
        "attn.hook_q": (b, p, cfg.n_heads, cfg.d_head),
        "attn.hook_rot_q": (b, p, cfg.n_heads, cfg.d_head),
        "attn.hook_k": (b, p, cfg.n_key_value_heads, cfg.d_head),
        "attn.hook_v": (b, p, cfg.n_key_value_heads, cfg.d_head_v),
        "attn.hook_rot_k": (b, p, cfg.n_key_value_heads, cfg.d_head),
        "attn.hook_attn_scores": (b, cfg.n_heads, p, p),
        "attn.hook_pattern": (b, cfg.n_heads, p, p),
        "attn.hook_sink_logits": (b, p, cfg.n_heads),
        "attn.hook_z": (b, p, cfg.n_heads, cfg.d_head_v),
        "attn.hook_result": (b, p, cfg.n_heads, cfg.d_model),
        "attn.hook_q_normed": (b, p, cfg.n_heads, cfg.d_head),
        "attn.hook_k_normed": (b, p, cfg.n_key_value_heads, cfg.d_head),
        "mlp.hook_pre": (b, p, cfg.d_mlp),
        "mlp.hook_post": (b, p, cfg.d_mlp),
        "mlp.hook_pre_linear": (b, p, cfg.d_mlp),
        "hook_embed": (b, p, cfg.d_model),
        "hook_pos_embed": (b, p, cfg.d_model),
    }


def contract_shape(contract: dict[str, tuple[int, ...]], local: str) -> tuple[int, ...] | None:
    """The contract's shape for a hook name relative to its part (``blocks.0.attn.hook_q``), if it has one."""
    if not local.startswith(("blocks.", "ln_final.", "hook_embed", "hook_pos_embed")):
        return None
    for suffix, shape in contract.items():
        if local == suffix or local.endswith("." + suffix):
            return shape
    return None


@contextlib.contextmanager
def all_opt_ins(model: Bridge) -> Iterator[list[str]]:
    """Enable every opt-in hook point for the duration; yields their names."""
    names = sorted(n for n, h in model.hook_dict.items() if h.opt_in)
    for name in names:
        model.set_opt_in(name, True)
    try:
        yield names
    finally:
        for name in names:
            model.set_opt_in(name, False)


def uses_rotary(hf_model: torch.nn.Module, scope: str = "") -> bool:
    """Whether the HF model (its module at ``scope``: one part of a composite model) rotates queries and keys:
    a rotary module, or a rotary setting in its config (and no ALiBi switch turning it off)."""
    module = hf_model.get_submodule(scope)
    config = _config_of(hf_model, scope)
    if getattr(config, "alibi", False):
        return False
    if any("Rotary" in type(m).__name__ for m in module.modules()):
        return True
    return any(getattr(config, key, None) for key in ("rotary_dim", "rope_theta", "rotary_pct"))


def _config_of(hf_model: torch.nn.Module, scope: str) -> Any:
    """The HF config of the module at ``scope``, or of its nearest ancestor that has one."""
    parts = scope.split(".") if scope else []
    for end in range(len(parts), -1, -1):
        config = getattr(hf_model.get_submodule(".".join(parts[:end])), "config", None)
        if config is not None:
            return config
    return hf_model.config


def part_scope(hf_model: torch.nn.Module, block_paths: list[str]) -> str:
    """The HF module holding a part's blocks list (``model`` for ``model.layers.{i}``): the part's own module,
    which holds its embeddings and rotary module and none of another part's."""
    if not block_paths:
        return ""
    layers = block_paths[0].rsplit(".", 1)[0] if "." in block_paths[0] else ""
    return layers.rsplit(".", 1)[0] if "." in layers else ""


def learned_position_tables(hf_model: torch.nn.Module, blocks: list[str]) -> list[str]:
    """HF ``nn.Embedding`` modules outside the blocks that hold positions: named so (``wpe``,
    ``embed_positions``…) or with one row per position of the config's context (OPT's has 2 more)."""
    config = hf_model.config
    contexts = {getattr(config, key, None) for key in ("n_positions", "max_position_embeddings")} - {None}
    rows = contexts | {n + 2 for n in contexts}
    vocab = getattr(config, "vocab_size", None)

    def holds_positions(name: str, module: torch.nn.Module) -> bool:
        if not isinstance(module, torch.nn.Embedding) or any(name.startswith(b + ".") for b in blocks):
            return False
        last = name.rsplit(".", 1)[-1].lower()
        return "pos" in last or last == "wpe" or (module.num_embeddings in rows and module.num_embeddings != vocab)

    return [name for name, module in hf_model.named_modules() if holds_positions(name, module)]


def check_implied_hooks(pair: Pair) -> None:
    """The hooks the HF model implies exist: ``attn.hook_rot_q/k`` in every self-attention of a rotary model,
    ``hook_pos_embed`` where the model has a learned position table, every attention's, MLP's and norm's
    TransformerLens hooks, and each block's residual hooks (its ``algebra``)."""
    model = pair.bridge
    hooks = set(model.hook_dict)
    missing: list[str] = []
    for prefix, part in pair.parts():
        block_paths = [_path(model, block.hf) for block in part.blocks]
        scope = part_scope(model.hf_model, block_paths)
        rotary = uses_rotary(model.hf_model, scope)
        tables = [t for t in learned_position_tables(model.hf_model, block_paths) if t.startswith(scope)]
        if tables and f"{prefix}hook_pos_embed" not in hooks and not prefix:
            missing.append(f"hook_pos_embed (the HF model has a learned position table: {tables})")
        for layer, block in enumerate(part.blocks):
            name = f"{prefix}blocks.{layer}"
            if not isinstance(block, Block) or not block.algebra:
                fail(f"{name} ({type(block).__name__}) is not a Block with a residual algebra")
            wanted = {"hook_resid_pre", "hook_resid_post"} | {
                h for total, terms in block.algebra for h in (total, *terms)
            }
            for child_name, child in block.named_children():
                if isinstance(child, Attention):
                    wanted |= {f"{child_name}.{h}" for h in ATTENTION_HOOKS}
                    if rotary and not isinstance(child, CrossAttention):  # encoder keys, decoder queries: unrotated
                        wanted |= {f"{child_name}.{h}" for h in ROTARY_HOOKS}
                elif isinstance(child, MLP):
                    wanted |= {f"{child_name}.{h}" for h in MLP_HOOKS}
                elif isinstance(child, Norm):
                    wanted |= {f"{child_name}.{h}" for h in NORM_HOOKS}
            missing += [
                f"{name}.{h}" + (" (the model is rotary)" if h.endswith(ROTARY_HOOKS) else "")
                for h in sorted(wanted)
                if f"{name}.{h}" not in hooks
            ]
    if missing:
        fail(f"{model.cfg.architecture}: hook points the model implies are missing: {missing}")


def _path(model: Bridge, module: torch.nn.Module) -> str:
    return next(name for name, m in model.hf_model.named_modules() if m is module)


def _full_shapes(pair: Pair, tokens: Any) -> dict[str, tuple[int, ...]]:
    with pair.on_path():
        _, cache = pair.bridge.run_with_cache(tokens, return_type=None)
    return {name: tuple(t.shape) for name, t in cache.items()}


def _recorder(seen: list[tuple[int, ...]]) -> Any:
    def record(t: torch.Tensor, hook: Any) -> None:
        seen.append(tuple(t.shape))

    return record


def check_shapes(pair: Pair) -> None:
    """Every hook point of ``hook_dict`` (opt-in ones enabled) fires once with the contract's shape
    (TransformerLens shapes, batch first) when it is the *only* hook in use, and with the same shape when
    every hook is in use. Hooks outside the contract (family hooks) are held to the second condition."""
    model = pair.bridge
    batch, pos = 2, 7
    tokens = pair.tokens(batch, pos)
    shapes = pair.shapes(batch, pos)
    problems: list[str] = []
    with all_opt_ins(model):
        together = _full_shapes(pair, tokens)
        for name in model.hook_dict:
            seen: list[tuple[int, ...]] = []
            model.run_with_hooks(tokens, fwd_hooks=[(name, _recorder(seen))], return_type=None)
            if not seen:
                problems.append(f"{name}: never fired when it was the only hook in use")
                continue
            alone = seen[0]
            prefix = next((p for p, _ in pair.parts() if p and name.startswith(p)), "")
            part = dict(pair.parts()).get(prefix)
            within = shapes.get(prefix[:-1])  # None: a composite model's own hooks, outside every tower
            contract = shape_contract(part.cfg, *within) if part is not None and within else {}
            expected = contract_shape(contract, name[len(prefix) :])
            if expected is not None and alone != expected:
                problems.append(f"{name}: shape {alone} alone, the contract says {expected}")
            if name not in together:
                problems.append(f"{name}: not cached when every hook point is in use")
            elif together[name] != alone:
                problems.append(f"{name}: shape {alone} alone but {together[name]} with every hook in use")
    if problems:
        fail("hook shapes: " + "; ".join(problems))
    if not model.hook_dict:
        raise CheckNotRun("the bridge has no hook points to check")
