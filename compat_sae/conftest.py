"""SAELens 6.54's own training and evaluation code, run unchanged on a ``bridge.Bridge``.

SAELens loads only its own model classes by name (``HookedTransformer``, ``HookedMamba``,
``AutoModelForCausalLM`` through its proxy); any other model goes in as an object:
``override_model=`` for the training runner, the ``model`` argument of ``ActivationsStore`` and
``run_evals``. Each family gets one saved tiny checkpoint (seeded random weights, norms perturbed):
``model`` is ``bridge.load`` of it, ``hf`` an independent HF model loaded from the same directory,
which the reference numbers are computed on.

Run with ``make test-compat`` (its own venv, ``.venv-compat-sae``, with sae-lens installed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

import bridge
from bridge.testing import save_tiny_model
from bridge_gpt2 import GPT2Adapter
from bridge_llama import LlamaAdapter
from bridge_mamba import MambaAdapter
from bridge_mla import DeepseekV3Adapter

torch.set_num_threads(1)

FAMILIES = {"gpt2": GPT2Adapter, "llama": LlamaAdapter, "mamba": MambaAdapter, "deepseek": DeepseekV3Adapter}
LAYER = 0  # the SAE reads blocks.0.hook_resid_post: HF's hidden_states[1], before any final norm
HOOK = f"blocks.{LAYER}.hook_resid_post"


@dataclass
class Family:
    """One tiny checkpoint as a ``bridge.Bridge`` and as an independent HF model."""

    name: str
    model: bridge.Bridge
    hf: Any
    tokenizer: Any

    @property
    def d_model(self) -> int:
        return self.model.cfg.d_model

    @property
    def special(self) -> torch.Tensor:
        """The structural special token ids (BOS, EOS, PAD), which SAELens's evals leave out."""
        ids = {self.tokenizer.bos_token_id, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        return torch.tensor(sorted(i for i in ids if i is not None))


_families: dict[str, Family] = {}


def build_family(name: str, directory) -> Family:
    if name not in _families:
        save_tiny_model(FAMILIES[name].example_config(), directory)
        model = bridge.load(directory)
        hf = AutoModelForCausalLM.from_pretrained(directory).eval()
        _families[name] = Family(name, model, hf, model.tokenizer)
    return _families[name]


@pytest.fixture(params=sorted(FAMILIES))
def family(request, tmp_path_factory) -> Family:
    return build_family(request.param, tmp_path_factory.mktemp(request.param))
