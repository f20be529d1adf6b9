"""Measure how much of a notebook's TransformerLens/SAELens API surface ``make test-compat`` covers.

    python tools/tutorial_surface.py NOTEBOOK.ipynb [...]

Reads the code cells, collects the calls on the model (``model.run_with_cache``, ``model.unembed.W_U``…), on
caches (``cache.decompose_resid``, ``cache[...]``), and on ``utils``, ``patching``, ``evals``, ``head_detector``,
and prints each with the compat test that checks it against TransformerLens or SAELens
(``compat/tutorial_surface.py``), then the covered share. Load cells (``from_pretrained``, ``boot_transformers``)
and calls on other objects (plotting, SAELens's ``SAE``) are not counted.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compat.tutorial_surface import LOAD_CALLS, SURFACE

CALL = re.compile(
    r"\b(?P<owner>model|[a-z_]*cache|utils|patching|evals|head_detector)"
    r"(?P<path>(?:\.[A-Za-z_]\w*)+|\[)"
)
CANONICAL_OWNER = {"model": "model", "utils": "utils", "patching": "patching", "evals": "evals"}


def calls_in(source: str) -> set[str]:
    """The API names a piece of code uses, normalised (``gpt2_cache.x`` → ``cache.x``, ``model.cfg.n_layers`` →
    ``model.cfg``, ``model.blocks[3].attn.W_Q`` → ``model.blocks.attn.W_Q``)."""
    source = re.sub(r"\bblocks\[[^\[\]]*\]", "blocks", source)  # model.blocks[i].attn -> model.blocks.attn
    found = set()
    for match in CALL.finditer(source):
        owner = CANONICAL_OWNER.get(match["owner"], "cache" if match["owner"].endswith("cache") else None)
        if owner is None or match["owner"] == "head_detector":
            owner = match["owner"]
        path = match["path"]
        if path == "[":
            found.add(f"{owner}[...]")
            continue
        parts = path.strip(".").split(".")
        if owner == "model" and parts[0] == "cfg":
            parts = ["cfg"]
        name = f"{owner}.{'.'.join(parts[:3])}"
        if owner in ("model", "cache") or len(parts) >= 1:
            found.add(name)
    return {name for name in found if name not in LOAD_CALLS}


def notebook_calls(path: Path) -> set[str]:
    cells = json.loads(path.read_text())["cells"]
    return calls_in("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))


def main(paths: list[str]) -> int:
    used: set[str] = set()
    for path in paths:
        calls = notebook_calls(Path(path))
        used |= calls
        covered = calls & set(SURFACE)
        print(f"{path}: {len(covered)}/{len(calls)} calls covered")
    print()
    for name in sorted(used):
        print(f"  {'ok ' if name in SURFACE else '-- '} {name:<45} {SURFACE.get(name, 'not covered')}")
    covered = used & set(SURFACE)
    share = len(covered) / len(used) if used else 1.0
    print(f"\n{len(covered)}/{len(used)} distinct calls covered by make test-compat ({share:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
