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
from bridge.testing.compare import CheckNotRun, conformance_check, fail
from bridge.testing.layers import is_attention

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
    a rotary module, or a rotary setting in its config (``rope_parameters``, ``rotary_dim``…; and no ALiBi switch
    turning it off, nor a switch turning it off where the config keeps RoPE settings anyway: Zamba2's
    ``use_mem_rope``, Granite-4's ``position_embedding_type`` other than ``"rope"``)."""
    module = hf_model.get_submodule(scope)
    config = _config_of(hf_model, scope)
    if getattr(config, "alibi", False):
        return False
    if any("Rotary" in type(m).__name__ for m in module.modules()):
        return True
    kind = getattr(config, "position_embedding_type", "rope")  # Granite-4: None or "nope" without RoPE
    if getattr(config, "use_mem_rope", None) is False or kind not in ("rope", "rotary"):
        return False
    keys = ("rope_parameters", "rotary_dim", "rope_theta", "rotary_pct", "partial_rotary_factor")
    return any(getattr(config, key, None) for key in keys) or getattr(config, "position_embedding_type", "") == "rotary"


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
    """HF ``nn.Embedding`` modules anywhere outside the blocks that hold positions: named so (``wpe``,
    ``position_embeddings``, ``embed_positions``…) or with one row per position of the config's context (OPT's has
    2 more), and not the token embedding."""
    root = getattr(hf_model, "config", None)
    configs = [root] + [getattr(root, key, None) for key in getattr(root, "sub_configs", {}) or {}]
    keys = ("n_positions", "max_position_embeddings")
    contexts = {getattr(c, key, None) for c in configs if c is not None for key in keys} - {None}
    rows = contexts | {n + 2 for n in contexts}
    vocabs = {getattr(c, "vocab_size", None) for c in configs if c is not None} - {None}
    try:
        tokens = hf_model.get_input_embeddings()
    except (AttributeError, NotImplementedError):  # image models may have none
        tokens = None

    def holds_positions(name: str, module: torch.nn.Module) -> bool:
        if not isinstance(module, torch.nn.Embedding) or module is tokens:
            return False
        if any(name.startswith(b + ".") for b in blocks):
            return False
        last = name.rsplit(".", 1)[-1].lower()
        named = ("pos" in last and "type" not in last) or last == "wpe"
        return named or (module.num_embeddings in rows and module.num_embeddings not in vocabs)

    return [name for name, module in hf_model.named_modules() if holds_positions(name, module)]


def used_modules(model: Bridge, names: list[str], tokens: Any) -> list[str]:
    """Which of the HF modules ``names`` a forward pass of the bridge's HF model on ``tokens`` calls."""
    called: set[str] = set()
    handles = []
    for name in names:

        def record(*_: Any, name: str = name) -> None:
            called.add(name)

        handles.append(model.hf_model.get_submodule(name).register_forward_hook(record))
    try:
        with torch.no_grad():
            model(tokens, return_type=None)
    finally:
        for handle in handles:
            handle.remove()
    return [name for name in names if name in called]


#: Names HF gives the per-attention norms of queries and keys (Qwen3, Gemma 3, OLMo-2, Cohere, Persimmon…).
QK_NORM_NAMES = {
    "q": ("q_norm", "q_layernorm", "query_layernorm", "q_ln", "query_norm"),
    "k": ("k_norm", "k_layernorm", "key_layernorm", "k_ln", "key_norm"),
}


def qk_norm_modules(attention_module: torch.nn.Module, caller: torch.nn.Module | None = None) -> dict[str, str]:
    """``{"q": path, "k": path}`` of an HF attention module's own query and key norms, where it has them: children
    of the attention module, or of ``caller`` (its submodule that calls the attention function, BERT-style). Norms
    deeper down belong to another computation inside the attention (DeepSeek-V3.2's indexer has a ``k_norm`` of
    its own keys) and are not the attention's."""
    parents = {id(attention_module)}
    if caller is not None:
        parents.add(id(caller))
    found = {}
    for which, names in QK_NORM_NAMES.items():
        for path, _ in attention_module.named_modules():
            parent = attention_module.get_submodule(path.rpartition(".")[0]) if path else None
            if path and path.rsplit(".", 1)[-1] in names and id(parent) in parents:
                found[which] = path
                break
    return found


@conformance_check(paths=("native",))
def check_implied_hooks(pair: Pair) -> None:
    """The hooks the HF model implies exist: ``attn.hook_rot_q/k`` in every self-attention of a rotary model,
    ``hook_pos_embed`` where the model uses a learned position table (anywhere in the model, found by name or by
    its rows), ``attn.hook_q_normed``/``hook_k_normed`` where the HF attention has its own query/key norm, every
    attention's, MLP's and norm's TransformerLens hooks, and each block's residual hooks (its ``algebra``)."""
    model = pair.bridge
    hooks = set(model.hook_dict)
    missing: list[str] = []
    paths = {prefix: [_path(model, block.hf) for block in part.blocks] for prefix, part in pair.parts()}
    all_blocks = [path for block_paths in paths.values() for path in block_paths]
    for prefix, part in pair.parts():
        block_paths = [_path(model, block.hf) for block in part.blocks]
        scope = part_scope(model.hf_model, block_paths)
        rotary = uses_rotary(model.hf_model, scope)
        if not prefix:
            tables = learned_position_tables(model.hf_model, all_blocks)
            tables = [t for t in tables if _nearest_part(t, paths) == ""]
            tables = used_modules(model, tables, pair.tokens()) if tables else []
            if tables and "hook_pos_embed" not in hooks:
                missing.append(f"hook_pos_embed (the HF model uses a learned position table: {tables})")
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
                if is_attention(child) and getattr(child, "hf_module", None) is not None:
                    norms = qk_norm_modules(child.hf_module, getattr(child, "seam_module", None))
                    wanted |= {f"{child_name}.hook_{w}_normed" for w in norms}
            missing += [f"{name}.{h}" + _why(h) for h in sorted(wanted) if f"{name}.{h}" not in hooks]
    if missing:
        fail(f"{model.cfg.architecture}: hook points the model implies are missing: {missing}")


def _nearest_part(module: str, block_paths: dict[str, list[str]]) -> str:
    """The part (its prefix) whose blocks share the longest module path with ``module``: a position table inside a
    vision tower belongs to the tower, not to the language model beside it."""

    def shared(a: str, b: str) -> int:
        n = 0
        for x, y in zip(a.split("."), b.split("."), strict=False):
            if x != y:
                break
            n += 1
        return n

    scores = {prefix: max((shared(module, p) for p in paths), default=-1) for prefix, paths in block_paths.items()}
    return max(scores, key=lambda prefix: (scores[prefix], prefix == ""))


def _why(hook: str) -> str:
    if hook.endswith(ROTARY_HOOKS):
        return " (the model is rotary)"
    if hook.endswith("_normed"):
        return " (the HF attention has its own query/key norm)"
    return ""


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


def _norm_width(model: Bridge, name: str, expected: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The contract's shape of a norm's ``hook_normalized``, ``[b, p, d_model]``, with the width of the norm's own
    weight where it normalizes something wider (Zamba2's shared block reads ``[resid | embed]``, ``2·d_model``)."""
    if expected is None or not name.endswith(".hook_normalized"):
        return expected
    norm = model.get_submodule(name.rsplit(".", 1)[0])
    weight = getattr(norm.hf, "weight", None) if isinstance(norm, Norm) else None
    if weight is None or weight.ndim != 1:
        return expected
    return (*expected[:-1], weight.shape[0])


@conformance_check(paths=("native",))
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
            expected = _norm_width(model, name, contract_shape(contract, name[len(prefix) :]))
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
