"""``Pair``: a bridged tiny model and an independent HF reference with the same weights, what every check takes.

``make_pair`` saves an adapter's example model, loads it through ``bridge.load`` and builds the reference
(eager attention, from the adapter's ``Examples``).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

import bridge
from bridge.kernel.examples import Examples
from bridge.kernel.towers import TowerModule
from bridge.model import Bridge
from bridge.testing.examples import AdapterLike, examples_of
from bridge.testing.fixtures import save_tiny_model

AttnPath = Literal["native", "hooked"]


@dataclass
class Pair:
    """A bridged model and an HF reference with the same weights."""

    bridge: Bridge
    reference: torch.nn.Module
    path: AttnPath = "native"
    #: The adapter's examples (``None``: those its plugin registered).
    examples: type[Examples] | None = None

    @property
    def example_set(self) -> type[Examples]:
        """The examples the checks use for inputs and references."""
        return self.examples or examples_of(type(self.bridge.adapter))

    @property
    def has_head(self) -> bool:
        return self.bridge.unembed is not None

    def _example(self, batch: int, seed: int) -> Any:
        return self.example_set.example_input(self.bridge.hf_model.config, batch, seed)

    def tokens(self, batch: int = 2, pos: int = 12, seed: int = 0) -> Any:
        """The model input: random tokens ``[batch, pos]``, or, for a model that does not read tokens alone,
        its adapter's example input (a dict of HF inputs; ``pos`` is then the adapter's)."""
        example = self._example(batch, seed)
        if example is not None:
            return dict(example.inputs)
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(1, self.bridge.cfg.d_vocab, (batch, pos), generator=generator)

    def shapes(self, batch: int = 2, pos: int = 12, seed: int = 0) -> dict[str, tuple[int, int]]:
        """``(batch, positions)`` the blocks of each part see for ``tokens(batch, pos, seed)`` (see ``parts``)."""
        example = self._example(batch, seed)
        return dict(example.shapes) if example is not None else {"": (batch, pos)}

    def parts(self) -> list[tuple[str, Any]]:
        """``("", bridge)`` for a plain model; ``("vision.", tower)``… for each tower of a composite one, after
        ``("", bridge)`` where the composite model has a root tower (a vision-language model's language model)."""
        towers = [(f"{name}.", m) for name, m in self.bridge.named_children() if isinstance(m, TowerModule)]
        root = [("", self.bridge)] if len(self.bridge.blocks) or not towers else []
        return root + towers

    @property
    def return_type(self) -> str:
        """What the checks compare: logits where the model has them, else the final hidden state."""
        fields = self.bridge.adapter.output_fields
        if fields is None:
            return "logits" if self.has_head else "hidden"
        return "logits" if "logits" in fields else "hidden"

    @property
    def scalar_return_type(self) -> str:
        """What gradient checks differentiate (summed): the loss of language models and of heads scored against
        labels (with ``scalar_labels``), else ``return_type``."""
        adapter = self.bridge.adapter
        lm_head = adapter.output_fields is None and self.has_head
        return "loss" if lm_head else self.return_type

    def scalar_labels(self, tokens: Any) -> torch.Tensor | None:
        """For heads scored against labels (``loss_kind == "labels"``): fixed labels for ``tokens`` (a class per
        sequence, or token ids with every other one -100) that the gradient checks' loss uses; else ``None``."""
        if self.bridge.adapter.loss_kind != "labels" or self.scalar_return_type != "loss":
            return None
        logits = self.reference_output(tokens)
        generator = torch.Generator().manual_seed(5)
        labels = torch.randint(0, logits.shape[-1], logits.shape[:-1], generator=generator)
        if labels.ndim == 2:
            labels[:, ::2] = -100
        return labels

    @contextlib.contextmanager
    def on_path(self) -> Iterator[None]:
        """Force the eager seam path with no-op pattern hooks when ``path == "hooked"``."""
        if self.path == "native":
            yield
            return
        with self.bridge.hooks(fwd_hooks=[(lambda n: n.endswith("attn.hook_pattern"), lambda t, hook: None)]):
            yield

    def output(self, tokens: Any, **kwargs: Any) -> torch.Tensor:
        return self.bridge(tokens, return_type=self.return_type, **kwargs)

    def run_reference(self, tokens: Any, model: torch.nn.Module | None = None, **kwargs: Any) -> Any:
        """The HF reference's own output object for the input ``tokens()`` gave."""
        model = model or self.reference
        return model(**tokens, **kwargs) if isinstance(tokens, Mapping) else model(tokens, **kwargs)

    def reference_output(self, tokens: Any, model: torch.nn.Module | None = None, **kwargs: Any):
        out = self.run_reference(tokens, model, **kwargs)
        fields = self.bridge.adapter.output_fields
        if fields is not None:
            return getattr(out, fields[self.return_type])
        return out.logits if self.has_head else out.last_hidden_state


def make_pair(
    adapter: AdapterLike,
    architecture: str | None = None,
    path: AttnPath = "native",
    directory: str | Path | None = None,
    seed: int = 0,
) -> Pair:
    """Save the adapter's example model (unless ``directory`` already holds one), load it with
    ``bridge.load``, and build an independent HF reference with eager attention. ``adapter``: an adapter whose
    plugin registered its ``Examples``, or an ``Examples`` class."""
    examples = examples_of(adapter)
    directory = Path(directory or tempfile.mkdtemp(prefix="bridge-conformance-"))
    if not (directory / "config.json").exists():
        save_tiny_model(examples.tiny_config(architecture), directory, seed=seed)
    model = bridge.load(directory, adapter=examples.adapter)
    reference = examples.reference_model(type(model.hf_model), directory)
    return Pair(model, reference, path, examples)


__all__ = ["AttnPath", "Pair", "make_pair"]
