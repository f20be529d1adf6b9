"""``bridge inspect MODEL --map``: the component tree a model's adapter built, one node per component with its
kind, the HF module it wraps and its spec's options; blocks built alike are shown once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from bridge.kernel.adapter import Spec
from bridge.kernel.components.base import Component
from bridge.kernel.hooked_model import HookedModel


@dataclass(frozen=True)
class MapNode:
    """One component: its name on the bridge, its kind, the HF module path it wraps, its spec's options."""

    name: str
    kind: str
    hf_path: str
    options: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "hf_path": self.hf_path, "options": self.options}


def render_option(value: Any) -> str:
    """A spec option as a reader wants it: specs by kind and path, functions and classes by name, the rest by
    ``repr``."""
    if isinstance(value, Spec):
        options = ", ".join(f"{k}={render_option(v)}" for k, v in value.options.items())
        return f"Spec({value.kind.__name__}, {value.path!r}{', ' + options if options else ''})"
    if callable(value) and hasattr(value, "__qualname__"):
        return value.__qualname__.replace(".<locals>.", ":")
    return repr(value)


def component_nodes(model: HookedModel) -> list[MapNode]:
    """Every component of ``model`` (depth first, in build order) and the HF unembedding where there is one."""
    paths = {id(module): name for name, module in model.hf_model.named_modules()}
    nodes = []
    for name, module in _components(model):
        hf = module.hf_module
        path = paths.get(id(hf), "?") if hf is not None else "-"
        options = ", ".join(f"{key}={render_option(value)}" for key, value in module.spec_options.items())
        nodes.append(MapNode(name, type(module).__name__, path or "(the model)", options))
    unembed = model.__dict__.get("unembed")
    if unembed is not None:
        nodes.append(MapNode("unembed", f"HF {type(unembed).__name__}", paths.get(id(unembed), "?"), ""))
    return nodes


def _components(model: nn.Module) -> Iterator[tuple[str, Component]]:
    for child_name, child in model.named_children():
        if child_name == "hf_model":
            continue
        for name, module in child.named_modules(prefix=child_name):
            if isinstance(module, Component):
                yield name, module


def folded(nodes: list[MapNode]) -> list[MapNode]:
    """``nodes`` with consecutive blocks built alike shown once, as ``blocks.0..5`` (the layer index in HF paths
    as ``{i}``)."""
    out: list[MapNode] = []
    prefix: str | None = None
    layers: dict[int, list[MapNode]] = {}  # layer -> its nodes, names and paths with the index as {i}
    for node in nodes:
        match = re.match(r"^(.*?blocks)\.(\d+)(\..*)?$", node.name)
        if match is None or match.group(1) != prefix:
            out += _stretches(prefix, layers)
            prefix, layers = (match.group(1), {}) if match else (None, {})
            if match is None:
                out.append(node)
                continue
        layer = int(match.group(2))
        name = f"{prefix}.{{i}}{match.group(3) or ''}"
        path = re.sub(rf"(^|\.){layer}(\.|$)", r"\1{i}\2", node.hf_path, count=1)
        layers.setdefault(layer, []).append(MapNode(name, node.kind, path, node.options))
    return out + _stretches(prefix, layers)


def _stretches(prefix: str | None, layers: dict[int, list[MapNode]]) -> list[MapNode]:
    """One group of nodes per stretch of consecutive layers whose nodes are identical."""
    out: list[MapNode] = []
    order = sorted(layers)
    start = 0
    for index in range(1, len(order) + 1):
        if index < len(order) and layers[order[index]] == layers[order[start]] and order[index] == order[index - 1] + 1:
            continue
        first, last = order[start], order[index - 1]
        span = str(first) if first == last else f"{first}..{last}"
        out += [MapNode(n.name.replace("{i}", span, 1), n.kind, n.hf_path, n.options) for n in layers[first]]
        start = index
    return out


def format_map(nodes: list[MapNode]) -> list[str]:
    """Aligned lines: name, kind, HF path, options."""
    width_name = max((len(n.name) for n in nodes), default=0)
    width_kind = max((len(n.kind) for n in nodes), default=0)
    width_path = max((len(n.hf_path) for n in nodes), default=0)
    return [
        f"  {n.name:<{width_name}}  {n.kind:<{width_kind}}  {n.hf_path:<{width_path}}  {n.options}".rstrip()
        for n in nodes
    ]


__all__ = ["MapNode", "component_nodes", "folded", "format_map"]
