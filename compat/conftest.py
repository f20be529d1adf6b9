"""TransformerLens 4.3.0's own analysis code, run unchanged on a ``bridge.Bridge``.

Each family gets one saved tiny checkpoint (seeded random weights, norms perturbed). ``ours`` is
``bridge.load`` of it; ``theirs`` is TransformerLens's ``TransformerBridge`` booted from an
independent HF model loaded from the same directory, with no weight processing: TransformerLens
computes the reference numbers, and each test runs the same TransformerLens call on both.
Both sides use eager attention, so they share HF's numerics.

Run with ``make test-compat`` (its own venv with transformer-lens installed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import bridge
from bridge.testing import examples_of, save_tiny_model
from bridge_gpt2 import GPT2Adapter
from bridge_llama import LlamaAdapter

torch.set_num_threads(1)

FAMILIES = {"gpt2": GPT2Adapter, "llama": LlamaAdapter}
VOCAB = 20_000  # evals.induction_loss draws token ids from [100, 20000)
BATCH, POS = 2, 6


@dataclass
class Pair:
    """The same checkpoint as a ``bridge.Bridge`` and as TransformerLens's ``TransformerBridge``."""

    family: str
    ours: bridge.Bridge
    theirs: Any
    clean: torch.Tensor  # [batch, pos]
    corrupted: torch.Tensor  # [batch, pos]: clean with two positions changed

    def both(self, fn):
        """``(fn(ours), fn(theirs))``, each under the same seed."""
        torch.manual_seed(0)
        mine = fn(self.ours)
        torch.manual_seed(0)
        reference = fn(self.theirs)
        return mine, reference


def logit_diff(logits: torch.Tensor) -> torch.Tensor:
    """A patching metric: mean logit difference of two tokens at the last position (a scalar)."""
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


def assert_same(mine: Any, reference: Any, atol: float = 1e-4) -> None:
    """Tensors (or nested tuples/lists of them, or plain values) equal to fp32 accuracy."""
    if isinstance(reference, torch.Tensor):
        assert isinstance(mine, torch.Tensor), f"expected a tensor, got {type(mine).__name__}"
        assert mine.shape == reference.shape, f"shape {tuple(mine.shape)} != TransformerLens {tuple(reference.shape)}"
        torch.testing.assert_close(mine.float(), reference.float(), atol=atol, rtol=0)
    elif isinstance(reference, (tuple, list)):
        assert isinstance(mine, (tuple, list)) and len(mine) == len(reference), (mine, reference)
        for a, b in zip(mine, reference, strict=True):
            assert_same(a, b, atol)
    else:
        assert mine == reference


def _tiny_config(family: str) -> Any:
    config = examples_of(FAMILIES[family]).example_config()
    config.vocab_size = VOCAB
    for context in ("n_positions", "max_position_embeddings"):  # evals.sanity_check's text is long
        if hasattr(config, context):
            setattr(config, context, 512)
    return config


_pairs: dict[tuple[str, bool | str], Pair] = {}


def build_pair(family: str, directory, processed: bool | str = False, **load: Any) -> Pair:
    """The pair for ``family``; ``processed``: both call ``enable_compatibility_mode()`` (fold_ln, centre writing
    weights and unembedding, fold value biases, where they apply); ``"refactored"``: with
    ``refactor_factored_attn_matrices=True`` too. ``load``: ``bridge.load``'s options for ours."""
    if (family, processed) not in _pairs:
        save_tiny_model(_tiny_config(family), directory)
        from transformer_lens.model_bridge import TransformerBridge

        ours = bridge.load(directory, attn_implementation="eager", **load)
        hf = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
        theirs = TransformerBridge.boot_transformers(
            str(directory), hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(directory)
        )
        if processed:
            refactor = processed == "refactored"
            ours.enable_compatibility_mode(disable_warnings=True, refactor_factored_attn_matrices=refactor)
            theirs.enable_compatibility_mode(disable_warnings=True, refactor_factored_attn_matrices=refactor)
        generator = torch.Generator().manual_seed(1)
        clean = torch.randint(1, 120, (BATCH, POS), generator=generator)
        corrupted = clean.clone()
        corrupted[:, 1] = (clean[:, 1] + 7) % 120 + 1
        corrupted[:, 3] = (clean[:, 3] + 11) % 120 + 1
        _pairs[family, processed] = Pair(family, ours, theirs, clean, corrupted)
    return _pairs[family, processed]


@pytest.fixture(params=sorted(FAMILIES))
def pair(request, tmp_path_factory) -> Pair:
    return build_pair(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(params=sorted(FAMILIES))
def processed_pair(request, tmp_path_factory) -> Pair:
    return build_pair(request.param, tmp_path_factory.mktemp(request.param), processed=True)


@pytest.fixture
def refactored_pair(tmp_path_factory) -> Pair:
    """GPT-2 (refactoring needs positions outside the QK circuit: not rotary), processed and refactored."""
    return build_pair("gpt2", tmp_path_factory.mktemp("gpt2"), processed="refactored")
