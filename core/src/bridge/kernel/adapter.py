"""Adapters: one class per architecture, mostly data.

An adapter says which HF architectures it handles, how their config maps onto
``BridgeConfig``, and its *component map*: which HF module paths become which bridge
components. One convention for paths: fields named ``head_*`` are relative to the top-level
HF model (the heads around the base model); every other path is relative to the map's
``root`` (``hf_model.base_model`` by default), and a block child's path to the HF block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import transformers
from torch import nn

from bridge.kernel.components.base import Component
from bridge.kernel.components.blocks import Block
from bridge.kernel.config import BridgeConfig, config_from_hf


@dataclass(frozen=True)
class Spec:
    """How to build one component: its kind, its HF module path (relative to the parent), options.

    Built as ``kind(parent.get_submodule(path), cfg, **options)``: every component kind takes
    ``(hf_module, cfg, **options)``. An empty path is the parent itself (never valid for a block child)."""

    kind: type[Component]
    path: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self, parent: nn.Module, cfg: BridgeConfig, **extra: Any) -> Component:
        module = parent.get_submodule(self.path) if self.path else parent
        component = self.kind(module, cfg, **self.options, **extra)
        object.__setattr__(component, "spec_options", dict(self.options))  # shown by `bridge inspect --map`
        return component


@dataclass(frozen=True)
class BlockSpec:
    """A block wiring, the specs of its children, and extra HF paths it calls (dropouts).

    ``for_layer(layer, hf_block)`` says which spec builds one layer: this one, unless a subclass chooses per layer
    (``DenseOrMoEBlockSpec``; ``LayerKinds`` for layers of different kinds). The bridge builds layer ``i`` with
    ``spec.for_layer(i, hf_block).build(hf_block, cfg)`` and checks each layer's spec against its HF block."""

    kind: type[Block]
    children: Mapping[str, Spec]
    extra_paths: Mapping[str, str] = field(default_factory=dict)

    def for_layer(self, layer: int, hf_block: nn.Module) -> BlockSpec:
        """The spec of layer ``layer`` (its HF block ``hf_block``): ``self`` for a uniform stack."""
        return self

    def build(self, hf_block: nn.Module, cfg: BridgeConfig) -> Block:
        children = {name: spec.build(hf_block, cfg) for name, spec in self.children.items()}
        paths = {name: spec.path for name, spec in self.children.items()} | dict(self.extra_paths)
        block = self.kind(hf_block, cfg, children, paths)
        object.__setattr__(block, "spec_options", dict(self.extra_paths))
        return block


@dataclass(frozen=True)
class DenseOrMoEBlockSpec(BlockSpec):
    """A block spec whose ``mlp`` child depends on the layer: ``moe_mlp`` where the HF block's MLP module has
    routed experts (an ``experts`` submodule), ``children["mlp"]`` elsewhere (DeepSeek's and GLM-4-MoE's first
    ``first_k_dense_replace`` layers, Llama 4's interleaved dense layers)."""

    moe_mlp: Spec | None = None

    def for_layer(self, layer: int, hf_block: nn.Module) -> BlockSpec:
        children: Mapping[str, Spec] = self.children
        if self.moe_mlp is not None and hasattr(hf_block.get_submodule(self.moe_mlp.path), "experts"):
            children = {**children, "mlp": self.moe_mlp}
        return BlockSpec(self.kind, children, self.extra_paths)

    def build(self, hf_block: nn.Module, cfg: BridgeConfig) -> Block:
        return self.for_layer(-1, hf_block).build(hf_block, cfg)


@dataclass(frozen=True)
class LayerKinds(BlockSpec):
    """Layers of different kinds in one stack (a hybrid's attention and SSM layers, dense and MoE MLPs): ``kinds``
    names each layer's kind, in order (usually read from the HF config, e.g. Jamba's ``layers_block_type``), and
    ``specs`` maps each kind to the ``BlockSpec`` building its layers::

        block=LayerKinds(
            kinds=tuple(hf_config.layers_block_type),          # ("mamba", "attention", "mamba", ...)
            specs={"attention": BlockSpec(SequentialBlock, attention_children),
                   "mamba": BlockSpec(MixerBlock, mamba_children)},
        )

    A kind may itself be any ``BlockSpec`` (a ``DenseOrMoEBlockSpec`` for a kind whose MLP varies). Every layer is
    checked against its own spec when the bridge is built; a layer whose kind has no spec, or a ``kinds`` that does
    not name every layer, raises ``ComponentMapError``."""

    kind: type[Block] = Block
    children: Mapping[str, Spec] = field(default_factory=dict)
    kinds: tuple[str, ...] = ()
    specs: Mapping[str, BlockSpec] = field(default_factory=dict)

    def for_layer(self, layer: int, hf_block: nn.Module) -> BlockSpec:
        from bridge.kernel.errors import ComponentMapError

        if not 0 <= layer < len(self.kinds):
            raise ComponentMapError(
                f"LayerKinds: layer {layer} has no kind; kinds names {len(self.kinds)} layers ({list(self.kinds)})"
            )
        kind = self.kinds[layer]
        if kind not in self.specs:
            raise ComponentMapError(
                f"LayerKinds: layer {layer} is of kind {kind!r}, which has no spec; specs has {sorted(self.specs)}"
            )
        return self.specs[kind].for_layer(layer, hf_block)

    def build(self, hf_block: nn.Module, cfg: BridgeConfig) -> Block:
        from bridge.kernel.errors import ComponentMapError

        raise ComponentMapError("LayerKinds builds a layer through for_layer(layer, hf_block), which knows its kind")


class PerLayerBlockSpec(LayerKinds):
    """``LayerKinds`` given positionally: block specs chosen per layer, for models whose layers are of different
    kinds (hybrids: attention layers between Mamba or linear-attention layers). Layer ``i`` is built from
    ``specs[kinds[i]]``. An adapter reads ``kinds`` from the HF config (``layer_types``, ``layers_block_type``,
    ``attn_layer_indices``…), never from a period of its own, and usually also sets ``BridgeConfig.layer_types``::

        kinds = tuple("attention" if t == "full_attention" else "mamba" for t in hf_config.layer_types)
        block = PerLayerBlockSpec(kinds, {"attention": BlockSpec(SequentialBlock, {...}),
                                          "mamba": BlockSpec(MyMixerBlock, {...})})

    The number of kinds must equal the number of HF layers, and every kind must have a spec (``ComponentMapError``
    otherwise, before any component is built); the component-map checks run on every layer."""

    def __init__(
        self, kinds: Sequence[str] = (), specs: Mapping[str, BlockSpec] | None = None, **fields: Any
    ) -> None:
        super().__init__(kinds=tuple(kinds), specs=dict(specs or {}), **fields)


@dataclass(frozen=True)
class ComponentMap:
    """Canonical names → HF paths and component kinds.

    ``blocks`` is the path of the ``ModuleList`` of layers; ``block`` is applied to each (a ``PerLayerBlockSpec``
    chooses one spec per layer). Paths are
    relative to ``root``, except the ``head_*`` fields, relative to the top-level model.
    ``head_unembed``: the unembedding's path from the top-level model; ``None`` uses
    ``get_output_embeddings()`` (only when ``root`` is ``None``).
    """

    blocks: str
    block: BlockSpec | PerLayerBlockSpec
    embed: str | None = None
    pos_embed: str | None = None
    ln_final: Spec | None = None
    head_unembed: str | None = None
    #: The module the other paths are relative to, as a path from the top-level model ("" is the model
    #: itself); ``None``: ``hf_model.base_model``. A tower of a larger model sets it (``"vision_model"``).
    root: str | None = None
    #: Further named components (``"ln_pre": Spec(Norm, "pre_layrnorm")``): hook names ``ln_pre.hook_scale``…
    extra: Mapping[str, Spec] = field(default_factory=dict)
    #: Hook points at the top of the map (``"hook_patch_embed": Spec(...)``), each fired by the component its
    #: spec builds; the component is given the hook point as ``hook=``. Paths relative to ``root``.
    hooks: Mapping[str, Spec] = field(default_factory=dict)
    #: As ``hooks``, with paths relative to the top-level model (heads and projections outside the tower).
    head_hooks: Mapping[str, Spec] = field(default_factory=dict)


@dataclass(frozen=True)
class Tower:
    """One part of a composite model: its component map and its own config (sizes of that part)."""

    map: ComponentMap
    cfg: BridgeConfig


@dataclass(frozen=True)
class Composite:
    """A model made of several towers (an image and a text encoder…), each built from its own component
    map under a name prefix: ``towers={"vision": Tower(...), "text": Tower(...)}`` gives hook names
    ``vision.blocks.0.attn.hook_z`` and ``text.blocks.0.hook_resid_post``, and components at
    ``model.vision.blocks[0]``. ``hooks`` are hook points at the top (paths relative to the top-level model),
    e.g. a projection shared by the towers' outputs; a dotted name groups them (``"vision_projector.hook_in"``).

    The tower under the empty prefix ``""`` is the root tower: it is built onto the bridge itself (hook names
    ``blocks.0.hook_resid_post``, ``model.blocks``, ``model.unembed``), so code written for a plain model runs
    unchanged on it; its config must be the adapter's ``bridge_config()`` (a vision-language model's language
    model next to ``vision_encoder.`` and ``vision_projector.``)."""

    towers: Mapping[str, Tower]
    hooks: Mapping[str, Spec] = field(default_factory=dict)
    #: Without a root tower: the tower whose unembedding and final norm are the model's (``model.unembed``,
    #: what ``return_type="hidden"`` returns): an encoder-decoder's ``"decoder"``. ``None``: the model has none.
    head: str | None = None


@dataclass(frozen=True)
class ExampleInput:
    """Model inputs for tests: HF forward keyword arguments (``pixel_values``…), and the ``(batch, positions)``
    the blocks of each part see (``""`` for a plain model, the tower prefix for a composite one); positions are
    patches, plus a CLS position where there is one, or tokens."""

    inputs: Mapping[str, Any]
    shapes: Mapping[str, tuple[int, int]]


class Adapter:
    """Base class of every architecture adapter.

    Subclasses set ``architectures`` (HF class names, e.g. ``"GPT2LMHeadModel"``) and/or
    ``model_types`` (e.g. ``"gpt2"``), implement ``component_map``, and override ``config_overrides``
    where the family names hyperparameters its own way. What tests need (tiny configs, example inputs)
    is not here but in the family's ``Examples`` (``bridge.kernel.examples``).
    ``priority`` lets a third-party adapter deliberately win over another for the same name.
    """

    architectures: ClassVar[tuple[str, ...]] = ()
    model_types: ClassVar[tuple[str, ...]] = ()
    priority: ClassVar[int] = 0
    #: Whether HF's ``output_hidden_states`` starts with the embedding output. Mamba's does not: it is
    #: ``(block_0, ..., block_{n-1}, norm_f(block_{n-1}))``. Read by the default ``hidden_state_hooks``.
    hidden_states_include_embeddings: ClassVar[bool] = True
    #: Whether HF's last ``hidden_states`` entry is ``ln_final``'s output (GPT-2, Llama) rather than the last
    #: block's (CLIP's and SigLIP's text towers). Read by the default ``hidden_state_hooks``.
    final_norm_in_hidden_states: ClassVar[bool] = True
    #: What the model reads: ``("text",)`` (tokens), ``("image",)`` (pixel values), both (two-tower models), or
    #: ``("audio",)`` (a float tensor or array of speech, given to HF as ``audio_input``).
    modalities: ClassVar[tuple[str, ...]] = ("text",)
    #: For audio models: the HF forward argument the audio goes to (``"input_values"``: raw samples
    #: ``[b, samples]``, HuBERT and Wav2Vec2; ``"input_features"``: log-mel features ``[b, mels, frames]``, Whisper).
    audio_input: ClassVar[str] = "input_values"
    #: For models that are not language models: ``return_type`` → the HF output attribute it returns
    #: (a tuple of attributes returns a tuple), e.g. ``{"hidden": "last_hidden_state", "pooled": "pooler_output"}``.
    output_fields: ClassVar[Mapping[str, str | tuple[str, ...]] | None] = None
    #: What ``return_type="loss"`` computes: ``"next_token"`` (causal language models: each next token of the
    #: input) or ``"labels"`` (cross-entropy against the ``labels=`` given to ``forward``, -100 not counted: masked
    #: language models, sequence-to-sequence models, classifiers; ``bridge.kernel.loss.labelled_loss``).
    loss_kind: ClassVar[str] = "next_token"
    #: The ``position_ids`` the bridge passes (batched ``[b, p]``, so position hooks are): ``"real_tokens"``
    #: (count real tokens only, so a left-padded prompt gets the positions it would have alone), ``"absolute"``
    #: (``0..p-1`` whatever the padding: BERT's learned table, as HF's default) or ``"model"`` (none: the HF model
    #: computes its own, RoBERTa's offset past the padding id).
    position_ids: ClassVar[str] = "real_tokens"
    #: For composite models: tower prefix → the HF output attribute holding that tower's own outputs
    #: (``hidden_states``, ``attentions``), e.g. ``{"vision": "vision_model_output"}``.
    tower_outputs: ClassVar[Mapping[str, str]] = {}
    #: Whether the HF model computes its position ids from the inputs itself (multimodal rotary positions, from
    #: the images' grids): the bridge then passes none, where it otherwise passes ``[b, p]`` positions.
    computes_positions: ClassVar[bool] = False

    def __init__(self, hf_config: Any) -> None:
        self.hf_config = hf_config

    def config_overrides(self) -> dict[str, Any]:
        """Fields of ``BridgeConfig`` that the standard HF attribute names get wrong for this family."""
        return {}

    def bridge_config(self) -> BridgeConfig:
        return config_from_hf(self.hf_config, **self.config_overrides())

    def component_map(self, cfg: BridgeConfig) -> ComponentMap | Composite:
        raise NotImplementedError(f"{type(self).__name__} must define component_map()")

    def model_class(self) -> type:
        """The HF class to load weights with: the config's architecture when it is ours."""
        for name in getattr(self.hf_config, "architectures", None) or []:
            if name in self.architectures and hasattr(transformers, name):
                return getattr(transformers, name)
        if self.architectures and hasattr(transformers, self.architectures[0]):
            return getattr(transformers, self.architectures[0])
        return transformers.AutoModelForCausalLM

    @classmethod
    def hidden_state_hooks(cls, n_layers: int) -> tuple[str, ...]:
        """The hook each entry of HF's ``output_hidden_states`` equals (names relative to the model or tower;
        ``"ln_final"``: HF's final norm applied to the last ``hook_resid_post``). The default follows
        ``hidden_states_include_embeddings`` and ``final_norm_in_hidden_states``; override for other layouts
        (e.g. a model whose last hidden state is projected after the final norm)."""
        posts = [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
        first = ["blocks.0.hook_resid_pre"] if cls.hidden_states_include_embeddings else []
        if not cls.final_norm_in_hidden_states:
            return (*first, *posts)
        if cls.hidden_states_include_embeddings:  # GPT-2, Llama: (embeddings, block_0, …, ln_final(block_{n-1}))
            return (*first, *posts[:-1], "ln_final")
        return (*posts, "ln_final")  # Mamba: (block_0, …, block_{n-1}, norm_f(block_{n-1}))

    @classmethod
    def describe(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"
