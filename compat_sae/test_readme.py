"""compat_sae/README.md's recipe runs as written and prints the numbers its comments show."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).parent / "README.md"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_readme_recipe_prints_what_it_says(monkeypatch):
    block = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    expected = [line.split("  # ", 1)[1] for line in block.splitlines() if line.startswith("print(")]
    monkeypatch.chdir(README.parent.parent)  # the recipe loads examples/models/induction-2l
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, str(README), "exec"), {})
    assert printed.getvalue().splitlines() == expected
