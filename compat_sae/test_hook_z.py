"""An SAE on ``attn.hook_z`` (``[b, p, n_heads, d_head]``, which SAELens flattens to ``n_heads * d_head``):
the store's activations and every number of ``run_evals`` against the same computation by hand at the
input of the HF attention's output projection (the heads' outputs, concatenated)."""

import pytest
import torch
from sae_lens import ActivationsStore, StandardSAE, StandardSAEConfig, run_evals
from sae_lens.evals import EvalConfig
from sae_lens.saes.sae import SAEMetadata
from sae_lens.training.activation_scaler import ActivationScaler

from compat_sae.conftest import LAYER
from compat_sae.corpus import CONTEXT, pretokenized_dataset, pretokenized_rows
from compat_sae.reference import (
    bridge_logits,
    downstream_metrics,
    hf_attention_out_projection,
    hf_module_input,
    module_input_edited,
    reconstruction_metrics,
)

HOOK_Z = f"blocks.{LAYER}.attn.hook_z"
BATCH, N_BATCHES = 8, 2


@pytest.fixture
def attention_family(family):
    if family.name == "mamba":
        pytest.skip("Mamba has no attention")
    return family


def random_sae(d_in: int) -> StandardSAE:
    """SAELens's initialisation (seeded), biases made nonzero so that they count."""
    torch.manual_seed(0)
    sae = StandardSAE(
        StandardSAEConfig(
            d_in=d_in, d_sae=48, metadata=SAEMetadata(hook_name=HOOK_Z, prepend_bos=True, context_size=CONTEXT)
        )
    )
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    return sae.eval()


def eval_store(family, sae, dataset) -> ActivationsStore:
    """A fresh store reading ``dataset`` from its first row, as ``from_sae`` builds it for this SAE."""
    return ActivationsStore.from_sae(
        family.model, sae, dataset, context_size=CONTEXT, streaming=False, store_batch_size_prompts=BATCH
    )


@pytest.mark.filterwarnings("ignore:The training dataset contains fewer samples:UserWarning")
def test_hook_z_store_and_run_evals_match_hand_computation(attention_family):
    family = attention_family
    projection = hf_attention_out_projection(family.hf, LAYER)
    d_in = hf_module_input(family.hf, projection, torch.zeros(1, 2, dtype=torch.long)).shape[-1]
    sae = random_sae(d_in)
    dataset, windows = pretokenized_dataset(family.tokenizer, 40, seed=4), pretokenized_rows(family.tokenizer, 40, 4)

    store = eval_store(family, sae, dataset)
    tokens = store.get_batch_tokens()
    torch.testing.assert_close(tokens, windows[:BATCH], rtol=0, atol=0)
    expected = hf_module_input(family.hf, projection, tokens)  # [BATCH, CONTEXT, n_heads * d_head]
    torch.testing.assert_close(store.get_activations(tokens), expected, rtol=1e-5, atol=1e-5)

    store = eval_store(family, sae, dataset)
    config = EvalConfig(
        n_eval_reconstruction_batches=N_BATCHES,
        n_eval_sparsity_variance_batches=N_BATCHES,
        compute_kl=True,
        compute_ce_loss=True,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
    )
    metrics, _ = run_evals(sae, store, family.model, ActivationScaler(), config, exclude_special_tokens=True)
    theirs = {k: v for group in metrics.values() for k, v in group.items()}

    def on_hf(batch, edit):
        if edit is None:
            return family.hf(input_ids=batch).logits
        with module_input_edited(projection, edit):
            return family.hf(input_ids=batch).logits

    def on_bridge(batch, edit):
        def per_head(z: torch.Tensor) -> torch.Tensor:  # [b, p, n_heads, d_head]
            return edit(z.flatten(-2)).reshape(z.shape)

        return bridge_logits(family.model, batch, HOOK_Z, None if edit is None else per_head)

    ce_batches = [windows[i * BATCH : (i + 1) * BATCH] for i in range(N_BATCHES)]
    with torch.no_grad():
        for label, logits_of in (("HF", on_hf), ("bridge", on_bridge)):
            for key, value in downstream_metrics(logits_of, sae, ce_batches, family.special).items():
                assert theirs[key] == pytest.approx(value, rel=1e-5, abs=1e-6), f"vs the {label} model: {key}"

        recon_batches = [windows[i * BATCH : (i + 1) * BATCH] for i in range(N_BATCHES, 2 * N_BATCHES)]
        activations = [hf_module_input(family.hf, projection, batch) for batch in recon_batches]
        for key, value in reconstruction_metrics(sae, activations, recon_batches, family.special).items():
            assert theirs[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert theirs["ce_loss_with_sae"] > theirs["ce_loss_without_sae"] + 0.01  # the random SAE does change the loss
