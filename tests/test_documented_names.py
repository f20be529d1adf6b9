"""Every Python name the READMEs and docs show exists: each import in their code blocks runs, and each dotted
``bridge…`` name in their text resolves (a module, or an attribute of one)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    p.relative_to(ROOT)
    for p in [ROOT / "README.md", *ROOT.glob("*/README.md"), *ROOT.glob("plugins/*/README.md"), *ROOT.glob("docs/*.md")]
    if ".venv" not in str(p)
)
PACKAGES = ("bridge", "bridge_gpt2", "bridge_llama", "bridge_mamba", "bridge_vision", "bridge_alibi", "bridge_mla")


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def imports(page: Path) -> list[str]:
    """The import statements of a page's Python blocks (those of the generated plugin's package excepted)."""
    found = []
    for block in code_blocks((ROOT / page).read_text()):
        try:
            tree = ast.parse(block)
        except SyntaxError:  # a block with elisions (``...``) in odd places: its import lines still count
            tree = ast.parse("\n".join(line for line in block.splitlines() if line.startswith(("import ", "from "))))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = getattr(node, "module", None) or node.names[0].name
                if module.split(".")[0] in PACKAGES:
                    found.append(ast.unparse(node))
    return found


def dotted_names(page: Path) -> list[str]:
    """Inline code naming something in bridge or a family: ``bridge.kernel.Examples``, ``bridge.harvest.open``."""
    text = re.sub(r"```.*?```", "", (ROOT / page).read_text(), flags=re.S)
    names = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        match = re.match(rf"^((?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", span)
        if match and "." in match.group(1):
            names.add(match.group(1))
    return sorted(names)


def resolve(name: str) -> object:
    """The object ``name`` names; a module's old path (``bridge._moved``) does not count: pages show today's."""
    from bridge._moved import MOVED

    old = [path for path in MOVED if name == path or name.startswith(f"{path}.")]
    assert not old, f"{name} uses the old module path {old[0]} (now {MOVED[old[0]]})"
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(name)


CASES = [(str(page), statement) for page in PAGES for statement in imports(page)]
NAMES = [(str(page), name) for page in PAGES for name in dotted_names(page)]


@pytest.mark.parametrize(("page", "statement"), CASES)
def test_every_import_a_page_shows_runs(page, statement):
    tree = ast.parse(statement).body[0]
    module = getattr(tree, "module", None) or tree.names[0].name
    resolve(module)
    exec(statement, {})


@pytest.mark.parametrize(("page", "name"), NAMES)
def test_every_dotted_name_a_page_shows_resolves(page, name):
    assert resolve(name) is not None, f"{page} shows {name}"


def test_the_pages_show_names_at_all():
    assert len(CASES) > 10 and len(NAMES) > 20


@pytest.mark.parametrize("page", PAGES, ids=str)
def test_no_page_keeps_a_placeholder(page):
    """Numbers filled in later (measurements) must not land as ``SOMETHING_PLACEHOLDER`` or ``TODO``."""
    text = (ROOT / page).read_text()
    assert not re.findall(r"\b[A-Z_]*PLACEHOLDER\b|\bTODO\b|\bTBD\b", text), page
