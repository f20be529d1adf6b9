"""TransformerLens 4's other spellings of bridge hook names.

TransformerLens 4's bridge names the input and output of each component (``blocks.3.hook_in``,
``blocks.3.attn.hook_out``, ``embed.hook_out``) and keeps the classic names as aliases; ``utils.get_act_name("in", 3)``
produces ``blocks.3.hook_in``. Here the classic names are the canonical ones, and these spellings resolve to them
wherever a hook name is taken (``add_hook``, ``run_with_hooks``, ``names_filter`` lists, cache keys). Only spellings
that name exactly the same tensor are aliases; the cache keeps canonical names only.
"""

from __future__ import annotations

import re
from collections.abc import Container

#: ``(pattern, canonical)``: a TransformerLens 4 spelling and the hook it names (``\\1`` is the layer).
TL4_ALIASES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), target)
    for pattern, target in (
        (r"blocks\.(\d+)\.hook_in", r"blocks.\1.hook_resid_pre"),
        (r"blocks\.(\d+)\.hook_out", r"blocks.\1.hook_resid_post"),
        (r"blocks\.(\d+)\.attn\.hook_out", r"blocks.\1.hook_attn_out"),
        (r"blocks\.(\d+)\.mlp\.hook_out", r"blocks.\1.hook_mlp_out"),
        (r"blocks\.(\d+)\.attn\.q\.hook_out", r"blocks.\1.attn.hook_q"),
        (r"blocks\.(\d+)\.attn\.k\.hook_out", r"blocks.\1.attn.hook_k"),
        (r"blocks\.(\d+)\.attn\.v\.hook_out", r"blocks.\1.attn.hook_v"),
        (r"blocks\.(\d+)\.attn\.o\.hook_in", r"blocks.\1.attn.hook_z"),
        (r"embed\.hook_out", "hook_embed"),
        (r"pos_embed\.hook_out", "hook_pos_embed"),
    )
)
#: Block-level hook points that TransformerLens 4 also spells under ``attn.`` (``blocks.1.attn.hook_q_input``).
ATTN_INPUT_HOOKS = ("hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input")


def alias_target(name: str) -> str | None:
    """The canonical spelling of a TransformerLens 4 alias (``blocks.3.hook_in`` → ``blocks.3.hook_resid_pre``),
    or ``None`` when ``name`` is not one."""
    for pattern, target in TL4_ALIASES:
        match = pattern.fullmatch(name)
        if match:
            return match.expand(target)
    if ".attn.hook_" in name:
        block_name = name.replace(".attn.hook_", ".hook_", 1)
        if block_name.rsplit(".", 1)[-1] in ATTN_INPUT_HOOKS:
            return block_name
    return None


def canonical_name(name: str, known: Container[str]) -> str:
    """``name`` itself when ``known`` has it, else the canonical name it is an alias of when ``known`` has that,
    else ``name`` unchanged (so the caller's unknown-name error names what was asked for)."""
    if name in known:
        return name
    target = alias_target(name)
    return target if target is not None and target in known else name
