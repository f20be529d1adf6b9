"""Building a bridge's components from a component map, onto the bridge or onto one tower of it.

A plain model has one ``ComponentMap``, built onto the ``Bridge`` itself (``model.blocks``,
``blocks.0.hook_resid_post``). A ``Composite`` (two-tower encoders, and later vision-language models)
has one map per tower, each built onto a ``TowerModule`` registered under its prefix
(``model.vision.blocks``, ``vision.blocks.0.hook_resid_post``), with the tower's own config. The tower
under the empty prefix (a vision-language model's language model) is built onto the bridge itself, so its
hook names are a plain model's (``blocks.0.hook_resid_post``) and its config is the bridge's.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from bridge.kernel.adapter import ComponentMap, Composite, Spec
from bridge.kernel.components.embedding import PosEmbedding, TokenEmbedding
from bridge.kernel.components.unembed import Unembed
from bridge.kernel.config import BridgeConfig
from bridge.kernel.hook_points import HookPoint


class TowerModule(nn.Module):
    """The components of one tower of a composite model: ``blocks``, embeddings, norms and its hook points.

    ``cfg`` is the tower's own config (its layers, heads and widths)."""

    def __init__(self, cfg: BridgeConfig) -> None:
        super().__init__()
        self.cfg = cfg


def build_map(
    owner: nn.Module, hf_model: nn.Module, cmap: ComponentMap, cfg: BridgeConfig, tower: bool = False
) -> None:
    """Build ``cmap``'s components onto ``owner`` (a ``Bridge`` or a ``TowerModule``).

    In a ``tower`` (not the root of the model), ``hook_embed`` fires only for calls of the embedding inside the
    tower's own module: two towers may share one embedding (T5's encoder and decoder).

    Sets ``blocks``, ``_hf_blocks``, ``ln_final``, ``_hf_ln_final`` and ``unembed`` (an ``Unembed`` around the HF
    head, or None) (and ``embed``,
    ``pos_embed``, the ``extra`` components and the ``hooks``/``head_hooks`` hook points where the map has them)."""
    root = hf_model.base_model if cmap.root is None else hf_model.get_submodule(cmap.root)
    if cmap.embed is not None:
        owner.hook_embed = HookPoint()
        module = root.get_submodule(cmap.embed)
        owner.embed = TokenEmbedding(module, cfg, hook=owner.hook_embed, scope=root, only_in_scope=tower)
    if cmap.pos_embed is not None:
        owner.hook_pos_embed = HookPoint()
        owner.pos_embed = PosEmbedding(root.get_submodule(cmap.pos_embed), cfg, hook=owner.hook_pos_embed)
    add_hooks(owner, root, cmap.hooks, cfg)
    owner.blocks = nn.ModuleList()
    owner._hf_blocks = list(root.get_submodule(cmap.blocks))
    for layer, hf_block in enumerate(owner._hf_blocks):
        owner.blocks.append(cmap.block.for_layer(layer, hf_block).build(hf_block, cfg))
    owner.ln_final = cmap.ln_final.build(root, cfg) if cmap.ln_final is not None else None
    # HF modules are plain attributes, not children: the HF model alone owns their parameters
    object.__setattr__(owner, "_hf_ln_final", owner.ln_final.hf if owner.ln_final is not None else None)
    for name, spec in cmap.extra.items():
        owner.add_module(name, spec.build(root, cfg))
    add_hooks(owner, hf_model, cmap.head_hooks, cfg)
    unembed = hf_model.get_submodule(cmap.head_unembed) if cmap.head_unembed is not None else None
    if cmap.head_unembed is None and cmap.root is None:
        unembed = hf_model.get_output_embeddings()
    owner.unembed = Unembed(unembed, cfg) if unembed is not None else None


def build_composite(owner: nn.Module, hf_model: nn.Module, composite: Composite, cfg: BridgeConfig) -> None:
    """Build the root tower (prefix ``""``) onto ``owner`` itself, each other tower under its prefix, and the
    composite's own hook points. Without a root tower ``owner`` gets no blocks (``owner.blocks`` is empty)."""
    root = composite.towers.get("")
    if root is not None:
        build_map(owner, hf_model, root.map, root.cfg)
    else:
        owner.blocks = nn.ModuleList()
        owner._hf_blocks = []
        owner.ln_final = owner._hf_ln_final = owner.unembed = None
    for prefix, tower in composite.towers.items():
        if prefix:
            part = TowerModule(tower.cfg)
            build_map(part, hf_model, tower.map, tower.cfg, tower=True)
            owner.add_module(prefix, part)
    if root is None and composite.head is not None:  # an encoder-decoder: the decoder's head is the model's
        head = getattr(owner, composite.head)
        object.__setattr__(owner, "unembed", head.unembed)
        object.__setattr__(owner, "_hf_ln_final", head._hf_ln_final)
    add_hooks(owner, hf_model, composite.hooks, cfg)


class HookGroup(nn.Module):
    """A namespace of hook points at the top of a composite model (``vision_projector.hook_in``): the hook
    points, and the components firing them (``taps``)."""


def add_hooks(owner: nn.Module, root: nn.Module, specs: Mapping[str, Spec], cfg: BridgeConfig) -> None:
    """A hook point ``owner.<name>`` per spec, fired by the component the spec builds (kept in ``owner.taps``).

    A dotted name (``"vision_projector.hook_out"``) puts the hook point in a ``HookGroup`` under ``owner``
    (``owner.vision_projector.hook_out``), created on first use."""
    for name, spec in specs.items():
        *groups, leaf = name.split(".")
        parent = owner
        for group in groups:
            if not hasattr(parent, group):
                parent.add_module(group, HookGroup())
            parent = getattr(parent, group)
        if not hasattr(parent, "taps"):
            parent.taps = nn.ModuleDict()
        point = HookPoint()
        setattr(parent, leaf, point)
        parent.taps[leaf] = spec.build(root, cfg, hook=point)
