"""SAELens 6.54's own training and evaluation code, run unchanged on a ``bridge.Bridge``.

SAELens loads only its own model classes by name (``HookedTransformer``, ``HookedMamba``,
``AutoModelForCausalLM`` through its proxy); any other model goes in as an object:
``override_model=`` for the training runner, the ``model`` argument of ``ActivationsStore`` and
``run_evals``. Each family gets one saved tiny checkpoint: seeded random weights (norms perturbed),
then a short language-model training on the corpus here, so that its layer-0 activations carry
what the later layers need (zero-ablating them costs ~3 nats of loss, which makes the CE numbers
of ``run_evals`` meaningful; an untrained model predicts about as badly either way). ``model`` is
``bridge.load`` of it, ``hf`` an independent HF model loaded from the same directory, on which the
reference numbers are computed.

Run with ``make test-compat`` (its own venv, ``.venv-compat-sae``, with sae-lens installed).
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
from bridge_mamba import MambaAdapter
from bridge_mla import DeepseekV3Adapter
from compat_sae.corpus import pretokenized_rows

torch.set_num_threads(1)

FAMILIES = {"gpt2": GPT2Adapter, "llama": LlamaAdapter, "mamba": MambaAdapter, "deepseek": DeepseekV3Adapter}
LM_STEPS = 120  # language-model training steps for each checkpoint
LAYER = 0  # the SAE reads blocks.0.hook_resid_post: the output of HF block 0
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


def train_language_model(directory, steps: int = LM_STEPS) -> None:
    """Train the checkpoint in ``directory`` on next-token loss over the corpus (AdamW, seeded) and save it."""
    hf = AutoModelForCausalLM.from_pretrained(directory)
    rows = pretokenized_rows(AutoTokenizer.from_pretrained(directory), 400, seed=0)  # [400, CONTEXT]
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(hf.parameters(), lr=1e-2)
    hf.train()
    for _ in range(steps):
        batch = rows[torch.randint(0, len(rows), (16,), generator=generator)]
        loss = hf(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hf.save_pretrained(directory)


_families: dict[str, Family] = {}


def build_family(name: str, directory) -> Family:
    if name not in _families:
        save_tiny_model(examples_of(FAMILIES[name]).example_config(), directory)
        torch.manual_seed(0)  # dropout during training
        train_language_model(directory)
        model = bridge.load(directory)
        hf = AutoModelForCausalLM.from_pretrained(directory).eval()
        _families[name] = Family(name, model, hf, model.tokenizer)
    return _families[name]


@pytest.fixture(params=sorted(FAMILIES))
def family(request, tmp_path_factory) -> Family:
    return build_family(request.param, tmp_path_factory.mktemp(request.param))
