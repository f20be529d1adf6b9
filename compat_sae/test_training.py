"""SAELens's training runner and ``run_evals`` on a Bridge, end to end.

For each family and each corpus kind, ``LanguageModelSAETrainingRunner(override_model=bridge)``
trains a small standard SAE on ``blocks.0.hook_resid_post`` for a few hundred steps; then
``run_evals`` scores it on held-out text of the same kind. Every number ``run_evals`` gives is
computed again by hand: the CE losses (SAE spliced in / clean / zero-ablated) and KL divergences
on the independent HF model with a forward hook on its block and on the bridge with
``run_with_hooks``; the reconstruction numbers from the HF model's hidden states and the SAE's
weights. Training must have helped: the trained SAE reconstructs held-out activations far better
than the SAE it started from.
"""

import copy

import pytest
import torch
from sae_lens import (
    ActivationsStore,
    LanguageModelSAERunnerConfig,
    LanguageModelSAETrainingRunner,
    LoggingConfig,
    StandardTrainingSAEConfig,
    run_evals,
)
from sae_lens.evals import EvalConfig
from sae_lens.training.activation_scaler import ActivationScaler

from compat_sae.conftest import HOOK, LAYER
from compat_sae.corpus import CONTEXT, pretokenized_dataset, pretokenized_rows, sentences, text_dataset, text_windows
from compat_sae.reference import bridge_logits, downstream_metrics, hf_block_output, hf_logits, reconstruction_metrics

STEPS = 300
TOKENS_PER_STEP = 64
D_SAE = 64
EVAL_BATCH = 8  # prompts per eval batch
EVAL_BATCHES = 2  # for the CE/KL numbers, then as many more for the reconstruction numbers


def runner_config(family, kind: str) -> LanguageModelSAERunnerConfig:
    return LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=family.d_model, d_sae=D_SAE, l1_coefficient=1e-3),
        model_name=f"tiny-{family.name}-bridge",  # a label only: the model is passed in
        hook_name=HOOK,
        is_dataset_tokenized=kind == "pretokenized",
        streaming=False,
        context_size=CONTEXT,
        prepend_bos=True,
        exclude_special_tokens=True,
        training_tokens=STEPS * TOKENS_PER_STEP,
        train_batch_size_tokens=TOKENS_PER_STEP,
        store_batch_size_prompts=8,
        n_batches_in_buffer=4,
        lr=3e-3,
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        verbose=False,
    )


def training_data(family, kind: str):
    if kind == "text":
        return text_dataset(300, seed=2)
    return pretokenized_dataset(family.tokenizer, 300, seed=2)


def held_out(family, kind: str):
    """(held-out dataset, its windows ``[n, CONTEXT]`` by hand), from other seeds than training."""
    if kind == "text":
        return text_dataset(60, seed=3), text_windows(family.tokenizer, sentences(60, seed=3))
    return pretokenized_dataset(family.tokenizer, 40, seed=3), pretokenized_rows(family.tokenizer, 40, seed=3)


def batches(windows: torch.Tensor, start: int, count: int) -> list[torch.Tensor]:
    return [windows[(start + i) * EVAL_BATCH : (start + i + 1) * EVAL_BATCH] for i in range(count)]


def assert_numbers_close(actual: dict, expected: dict, rel: float, label: str) -> None:
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, rel=rel, abs=1e-6), f"{label}: {key}"


@pytest.mark.filterwarnings("ignore:Dataset is not tokenized:UserWarning")
@pytest.mark.filterwarnings("ignore:The training dataset contains fewer samples:UserWarning")
@pytest.mark.filterwarnings("ignore:All samples in the training dataset have been exhausted:UserWarning")
@pytest.mark.parametrize("kind", ["text", "pretokenized"])
def test_train_then_run_evals_matches_hand_computation(family, kind):
    torch.manual_seed(0)
    runner = LanguageModelSAETrainingRunner(
        runner_config(family, kind), override_model=family.model, override_dataset=training_data(family, kind)
    )
    initial = copy.deepcopy(runner.sae)
    sae = runner.run().eval()

    dataset, windows = held_out(family, kind)
    assert len(windows) >= 2 * EVAL_BATCHES * EVAL_BATCH
    store = ActivationsStore.from_sae(
        family.model, sae, dataset, streaming=False, store_batch_size_prompts=EVAL_BATCH, n_batches_in_buffer=2
    )
    eval_config = EvalConfig(
        n_eval_reconstruction_batches=EVAL_BATCHES,
        n_eval_sparsity_variance_batches=EVAL_BATCHES,
        compute_kl=True,
        compute_ce_loss=True,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
    )
    metrics, _ = run_evals(sae, store, family.model, ActivationScaler(), eval_config, exclude_special_tokens=True)
    theirs = {k: v for group in metrics.values() for k, v in group.items()}
    print(f"\n{family.name}/{kind}: " + ", ".join(f"{k}={v:.5g}" for k, v in sorted(theirs.items())))

    # CE and KL: the first EVAL_BATCHES batches of the held-out windows
    ce_batches = batches(windows, 0, EVAL_BATCHES)
    with torch.no_grad():
        on_hf = downstream_metrics(
            lambda tokens, edit: hf_logits(family.hf, tokens, LAYER, edit), sae, ce_batches, family.special
        )
        on_bridge = downstream_metrics(
            lambda tokens, edit: bridge_logits(family.model, tokens, HOOK, edit), sae, ce_batches, family.special
        )
    assert_numbers_close(theirs, on_hf, 1e-5, "vs the HF model")
    assert_numbers_close(theirs, on_bridge, 1e-5, "vs the bridge's run_with_hooks")

    # reconstruction: the next EVAL_BATCHES batches (run_evals reads on through the store)
    recon_batches = batches(windows, EVAL_BATCHES, EVAL_BATCHES)
    activations = [hf_block_output(family.hf, tokens, LAYER) for tokens in recon_batches]
    with torch.no_grad():
        trained = reconstruction_metrics(sae, activations, recon_batches, family.special)
        untrained = reconstruction_metrics(initial, activations, recon_batches, family.special)
    assert_numbers_close(theirs, trained, 1e-4, "reconstruction")

    assert trained["mse"] < 0.25 * untrained["mse"], (trained, untrained)
    assert trained["explained_variance"] > 0.8, trained
