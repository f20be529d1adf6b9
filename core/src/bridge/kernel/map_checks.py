"""Checks of an adapter's component map against the HF model, before any component is built.

Each mistake raises ``ComponentMapError`` naming the adapter, the map field and the path: a block child
with an empty path (it would wrap the whole HF block), a path that names no submodule, and one HF module
given to two children of a block (``ln1`` and ``ln2`` both ``"input_layernorm"``; a shared norm is
``SharedNormParallelBlock`` with ``ln1`` alone).
"""

from __future__ import annotations

from torch import nn

from bridge.kernel.adapter import BlockSpec, ComponentMap, Composite, LayerKinds
from bridge.kernel.errors import ComponentMapError


def check_component_map(adapter_name: str, hf_model: nn.Module, cmap: ComponentMap | Composite) -> None:
    """Raise ``ComponentMapError`` for the first mistake in ``cmap`` (each tower's map for a ``Composite``)."""
    if isinstance(cmap, Composite):
        for prefix, tower in cmap.towers.items():
            _check_map(f"{adapter_name} (tower {prefix!r})", hf_model, tower.map)
        for name, spec in cmap.hooks.items():
            _resolve(adapter_name, hf_model, spec.path, f"hooks[{name!r}]", "the top-level model")
        return
    _check_map(adapter_name, hf_model, cmap)


def _resolve(adapter: str, parent: nn.Module, path: str, field: str, relative_to: str) -> nn.Module:
    try:
        return parent.get_submodule(path)
    except AttributeError:
        raise ComponentMapError(
            f"{adapter}: component map {field} has path {path!r}, but {relative_to} "
            f"({type(parent).__name__}) has no submodule {path!r}; its children are "
            f"{[name for name, _ in parent.named_children()]}."
        ) from None


def _check_map(adapter: str, hf_model: nn.Module, cmap: ComponentMap) -> None:
    root_name = "hf_model.base_model" if cmap.root is None else f"hf_model.{cmap.root}" if cmap.root else "hf_model"
    root = hf_model.base_model if cmap.root is None else _resolve(adapter, hf_model, cmap.root, "root", "the model")
    for field in ("embed", "pos_embed"):
        path = getattr(cmap, field)
        if path is not None:
            _resolve(adapter, root, path, field, root_name)
    layers = _resolve(adapter, root, cmap.blocks, "blocks", root_name)
    if cmap.ln_final is not None and cmap.ln_final.path:
        _resolve(adapter, root, cmap.ln_final.path, "ln_final", root_name)
    for name, spec in {**cmap.extra, **cmap.hooks}.items():
        if spec.path:
            _resolve(adapter, root, spec.path, f"extra/hooks[{name!r}]", root_name)
    for name, spec in cmap.head_hooks.items():
        _resolve(adapter, hf_model, spec.path, f"head_hooks[{name!r}]", "the top-level model")
    if cmap.head_unembed is not None:
        _resolve(adapter, hf_model, cmap.head_unembed, "head_unembed", "the top-level model")
    if not isinstance(layers, nn.ModuleList | nn.Sequential):
        return
    if isinstance(cmap.block, LayerKinds):
        _check_kinds(adapter, cmap.block, len(layers), cmap.blocks)
    for layer, hf_block in enumerate(layers):
        try:
            spec = cmap.block.for_layer(layer, hf_block)
        except ComponentMapError as err:
            raise ComponentMapError(f"{adapter}: {err}") from None
        _check_block(adapter, hf_block, spec, hf_model, f"{cmap.blocks}.{layer}")


def _check_kinds(adapter: str, spec: LayerKinds, n_layers: int, blocks: str) -> None:
    kind = type(spec).__name__
    if len(spec.kinds) != n_layers:
        raise ComponentMapError(
            f"{adapter}: component map block is a {kind} with {len(spec.kinds)} kinds, but the HF model has "
            f"{n_layers} layers at {blocks!r}; give one kind per layer (read them from the HF config)."
        )
    unknown = sorted(set(spec.kinds) - set(spec.specs))
    if unknown:
        raise ComponentMapError(
            f"{adapter}: component map block is a {kind} whose kinds {unknown} have no spec; its specs are for "
            f"{sorted(spec.specs)}."
        )


def _check_block(adapter: str, hf_block: nn.Module, spec: BlockSpec, hf_model: nn.Module, where: str) -> None:
    owners: dict[int, str] = {}
    paths = {name: child.path for name, child in spec.children.items()} | dict(spec.extra_paths)
    for name, path in paths.items():
        field = f"block child {name!r}"
        if not path and name in getattr(spec.kind, "inline_children", ()):
            continue
        if not path:
            raise ComponentMapError(
                f"{adapter}: component map {field} has an empty path, which would make it the whole HF block "
                f"({type(hf_block).__name__}); give the path of its submodule, relative to the block (one of "
                f"{[child for child, _ in hf_block.named_children()]}), or list {name!r} in the wiring's "
                "inline_children if the wiring computes it from the block's modules."
            )
        module = _resolve(adapter, hf_block, path, field, f"the HF block {where}")
        if name not in spec.children:
            continue  # extra paths (dropouts) hold no state and may be shared
        other = owners.setdefault(id(module), name)
        if other != name:
            full = next((qualified for qualified, m in hf_model.named_modules() if m is module), path)
            raise ComponentMapError(
                f"{adapter}: component map block children {other!r} and {name!r} both have HF module {path!r} "
                f"({full}); "
                "give each HF module to one child (a norm shared by attention and MLP is "
                "SharedNormParallelBlock with 'ln1' only)."
            )
