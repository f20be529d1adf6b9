"""``bridge new-plugin NAME``: write a working plugin distribution from the template in ``plugin_template/``.

The distribution is ``bridge-NAME`` with the package ``bridge_NAME``: a pyproject with the ``bridge`` entry
point, an adapter ``NameAdapter`` (OPT's layout, written with public names only, claiming no architecture until
you edit it into your family's), its ``Examples``, the test suite every first-party family runs (the conformance
kit with its variants, the lifecycle kit, hypothesis properties), and a README with the hook table. Template files
end in ``.tmpl``; ``{{name}}``, ``{{package}}``, ``{{distribution}}``, ``{{title}}`` and ``{{Class}}`` are filled
in, in paths and contents alike.
"""

from __future__ import annotations

import re
from pathlib import Path

from bridge.kernel.errors import BridgeError

TEMPLATE = Path(__file__).with_name("plugin_template")


def plugin_names(name: str) -> dict[str, str]:
    """The template's placeholders for ``name`` (``"my-family"`` → package ``bridge_my_family``)."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise BridgeError(
            f"plugin name {name!r} is not usable: use lowercase letters, digits, '-' or '_', starting with a letter "
            "(e.g. `bridge new-plugin opt`)."
        )
    snake = name.replace("-", "_")
    return {
        "name": snake,
        "package": f"bridge_{snake}",
        "distribution": f"bridge-{snake.replace('_', '-')}",
        "title": snake.replace("_", " ").title(),
        "Class": "".join(part.title() for part in snake.split("_") if part),
    }


def write_plugin(name: str, into: str | Path) -> Path:
    """Write the distribution for ``name`` into a new directory ``into/bridge-NAME``; returns its path."""
    names = plugin_names(name)
    target = Path(into) / names["distribution"]
    if target.exists():
        raise BridgeError(f"{target} already exists; choose another directory (--into) or remove it.")
    for source in sorted(TEMPLATE.rglob("*.tmpl")):
        relative = str(source.relative_to(TEMPLATE)).removesuffix(".tmpl").replace("PACKAGE", names["package"])
        destination = target / _fill(relative, names)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(_fill(source.read_text(), names))
    return target


def _fill(text: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        text = text.replace("{{" + key + "}}", value)
    return text
